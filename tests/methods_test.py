"""The method presets: the Table 2 budget rule, and every preset end to end on tiny data."""

import dataclasses
import os

import numpy as np
import pytest

from crest import config as config_lib
from crest import loop, methods
from libml import datasets, records
from tests import fakes


def test_budget_is_split_into_generations_by_self_training_methods_only():
    assert methods.settings('fixmatch')['generations'] == 1
    assert methods.settings('fixmatch')['steps_per_generation'] == 6 * 2**16
    crest_plus = methods.settings('fixmatch_crest_plus')
    assert (crest_plus['generations'], crest_plus['steps_per_generation']) == (6, 2**16)
    mixmatch = methods.settings('mixmatch_crest_plus')  # paper: 3 generations of 2^17
    assert (mixmatch['generations'], mixmatch['steps_per_generation']) == (3, 2**17)
    small = methods.settings('fixmatch_crest', total_steps=2400, generations=2)
    assert (small['generations'], small['steps_per_generation']) == (2, 1200)
    # A one-generation method keeps one generation of the whole budget.
    assert methods.settings('fixmatch_rs', 2400, generations=2)['generations'] == 1
    assert methods.settings('crest_plus', 2400)['method'] == 'fixmatch_crest_plus'  # alias
    with pytest.raises(ValueError, match='--method must be one of'):
        methods.settings('fixmatch_plus_plus')


def test_every_preset_is_valid_and_derived_ones_train_as_their_source():
    for name, method in methods.METHODS.items():
        cfg = config_lib.resolve(config_lib.Config(**methods.settings(name)))
        config_lib.validate(cfg)
        if method.trains_as:
            source = config_lib.resolve(config_lib.Config(**methods.settings(method.trains_as)))
            assert config_lib.changed_settings(dataclasses.asdict(cfg), source) == [], name


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, 'tiny', fakes.tiny())


def _tiny_config(tmp_path, **settings):
    """A run on the tiny data set with the small CNN and small batches."""
    return config_lib.Config(
        workdir=str(tmp_path / 'run'),
        dataset='tiny',
        imbalance=8,
        label_fraction=0.3,
        arch='cnn_small',
        batch_size=8,
        uratio=2,
        ema_warmup=True,
        seed=1,
        **settings,
    )


@pytest.mark.parametrize('name', list(methods.METHODS))
def test_preset_runs_end_to_end(name, tiny, tmp_path):
    preset = methods.settings(name, total_steps=8, generations=2)
    cfg = _tiny_config(tmp_path, eval_every=2, **preset)
    results = loop.run(cfg, log=lambda _: None)
    expected = 2 if methods.METHODS[name].generations > 1 else 1
    assert len(results['generations']) == preset['generations'] == expected
    assert results['args']['method'] == name
    for gen in results['generations']:
        assert [e['step'] for e in gen['evals']][-1] == preset['steps_per_generation']
        assert 0 <= gen['balanced_accuracy'] <= 1 and 0 <= gen['balanced_accuracy_la'] <= 1
        assert len(gen['test']['recall_la']) == 10
    assert results['balanced_accuracy_la'] == results['generations'][-1]['balanced_accuracy_la']


def test_logit_adjusted_numbers_are_recomputed_from_the_saved_probabilities(tiny, tmp_path):
    preset = methods.settings('fixmatch_crest_plus', total_steps=12, generations=2)
    cfg = _tiny_config(tmp_path, eval_every=3, **preset)
    results = loop.run(cfg, log=lambda _: None)
    test = records.read_records(os.path.join(cfg.workdir, 'data', 'test.tfrecord'))
    for g, gen in enumerate(results['generations']):
        gen_dir = os.path.join(cfg.workdir, f'gen_{g:02d}')
        probs = np.load(os.path.join(gen_dir, 'test_probs.npy'))
        labeled = records.read_records(
            os.path.join(cfg.workdir, 'data' if g == 0 else f'gen_{g - 1:02d}', 'labeled.tfrecord')
        )
        prior = np.bincount(labeled.labels, minlength=10) / len(labeled)
        np.testing.assert_allclose(gen['test']['la_prior'], prior, atol=1e-6)
        predicted = (probs / prior).argmax(1)  # argmax of logits - log prior
        recall = [np.mean(predicted[test.labels == c] == c) for c in range(10)]
        assert gen['test']['final_balanced_accuracy_la'] == pytest.approx(np.mean(recall))
        plain = [np.mean(probs.argmax(1)[test.labels == c] == c) for c in range(10)]
        assert gen['test']['final_balanced_accuracy'] == pytest.approx(np.mean(plain))
