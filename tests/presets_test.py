"""The presets: the Table 2 budget rule, the precedence of flags, presets and defaults,
and every method preset end to end on tiny data."""

import dataclasses
import os

import numpy as np
import pytest

from crest import config as config_lib
from crest import loop, presets
from libml import datasets, records
from tests import fakes


def test_budget_is_split_into_generations_by_self_training_methods_only():
    assert presets.settings('fixmatch')['generations'] == 1
    assert presets.settings('fixmatch')['steps_per_generation'] == 6 * 2**16
    crest_plus = presets.settings('fixmatch_crest_plus')
    assert (crest_plus['generations'], crest_plus['steps_per_generation']) == (6, 2**16)
    mixmatch = presets.settings('mixmatch_crest_plus')  # paper: 3 generations of 2^17
    assert (mixmatch['generations'], mixmatch['steps_per_generation']) == (3, 2**17)
    small = presets.settings('fixmatch_crest', total_steps=2400, generations=2)
    assert (small['generations'], small['steps_per_generation']) == (2, 1200)
    # A one-generation method keeps one generation of the whole budget.
    assert presets.settings('fixmatch_rs', 2400, generations=2)['generations'] == 1
    with pytest.raises(ValueError, match='--method must be one of'):
        presets.settings('fixmatch_plus_plus')


def test_flags_win_over_the_method_over_the_protocol_over_the_algorithm_over_defaults():
    # ImageNet127's protocol: 3 generations, alpha 0.7, FixMatch with threshold 0.7.
    values = presets.combine({}, preset='imagenet127')
    assert values['generations'] == 3 and values['alpha'] == 0.7
    assert values['hparams'] == {'threshold': 0.7, 'wu': 10.0}
    # A method over it: its algorithm, generations and budget; the protocol's FixMatch
    # hyperparameters then do not apply.
    values = presets.combine({}, 'mixmatch_crest_plus', 'imagenet127', total_steps=900)
    assert (values['algorithm'], values['generations'], values['steps_per_generation']) == (
        'mixmatch',
        3,
        300,
    )
    assert values['hparams'] == {} and values['alpha'] == 0.7  # alpha: the protocol's.
    # A flag given over both; --generations is the method's number of generations.
    given = {'alpha': 0.5, 'generations': 2, 'hparams': {'T': 0.4}}
    values = presets.combine(given, 'mixmatch_crest_plus', 'imagenet127', total_steps=900)
    assert values['alpha'] == 0.5 and values['generations'] == 2
    assert values['steps_per_generation'] == 450 and values['hparams'] == {'T': 0.4}
    # Nothing given: the algorithm's paper settings, then Config's defaults.
    cfg = config_lib.resolve(config_lib.Config(**presets.combine({'algorithm': 'mixmatch'})))
    assert (cfg.alpha, cfg.t_min, cfg.uratio) == (0.5, 0.8, 1)
    assert cfg.lr == config_lib.Config.lr
    with pytest.raises(ValueError, match='--total_steps applies with --method only'):
        presets.combine({}, total_steps=10)
    with pytest.raises(ValueError, match='--preset must be one of'):
        presets.combine({}, preset='fixmatch')


def test_imagenet127_trains_fixmatchs_3000_epochs_of_the_labeled_set():
    values = presets.protocol_settings('imagenet127')
    labeled = round(0.1 * 1_281_167)  # ImageNet's train split, 10% labeled.
    epochs = values['steps_per_generation'] * values['batch_size'] / labeled
    assert values['steps_per_generation'] == 375_000
    assert epochs == pytest.approx(3000, rel=1e-3)  # 375,000 is rounded.


def test_every_algorithm_declares_its_paper_settings():
    from libml.algorithms import ALGORITHMS

    for name, algorithm in ALGORITHMS.items():
        assert set(algorithm.PAPER_SETTINGS) == {
            'alpha',
            't_min',
            'steps_per_generation',
            'uratio',
        }, name


def test_every_preset_is_valid_and_derived_ones_train_as_their_source():
    for name, method in presets.METHODS.items():
        cfg = config_lib.resolve(config_lib.Config(**presets.settings(name)))
        config_lib.validate(cfg)
        if method.trains_as:
            source = config_lib.resolve(config_lib.Config(**presets.settings(method.trains_as)))
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


@pytest.mark.parametrize('name', list(presets.METHODS))
def test_preset_runs_end_to_end(name, tiny, tmp_path):
    preset = presets.settings(name, total_steps=8, generations=2)
    cfg = _tiny_config(tmp_path, eval_every=2, **preset)
    results = loop.run(cfg, log=lambda _: None)
    expected = 2 if presets.METHODS[name].generations > 1 else 1
    assert len(results.generations) == preset['generations'] == expected
    assert results.args['method'] == name
    for gen in results.generations:
        assert [e.step for e in gen.evals][-1] == preset['steps_per_generation']
        assert 0 <= gen.balanced_accuracy <= 1 and 0 <= gen.balanced_accuracy_la <= 1
        assert len(gen.test.recall_la) == 10
    assert results.balanced_accuracy_la == results.generations[-1].balanced_accuracy_la


def test_logit_adjusted_numbers_are_recomputed_from_the_saved_probabilities(tiny, tmp_path):
    preset = presets.settings('fixmatch_crest_plus', total_steps=12, generations=2)
    cfg = _tiny_config(tmp_path, eval_every=3, **preset)
    results = loop.run(cfg, log=lambda _: None)
    test = records.read_records(os.path.join(cfg.workdir, 'data', 'test.tfrecord'))
    for g, gen in enumerate(results.generations):
        gen_dir = os.path.join(cfg.workdir, f'gen_{g:02d}')
        probs = np.load(os.path.join(gen_dir, 'test_probs.npy'))
        labeled = records.read_records(
            os.path.join(cfg.workdir, 'data' if g == 0 else f'gen_{g - 1:02d}', 'labeled.tfrecord')
        )
        prior = np.bincount(labeled.labels, minlength=10) / len(labeled)
        np.testing.assert_allclose(gen.test.la_prior, prior, atol=1e-6)
        predicted = (probs / prior).argmax(1)  # argmax of logits - log prior
        recall = [np.mean(predicted[test.labels == c] == c) for c in range(10)]
        assert gen.test.final_balanced_accuracy_la == pytest.approx(np.mean(recall))
        plain = [np.mean(probs.argmax(1)[test.labels == c] == c) for c in range(10)]
        assert gen.test.final_balanced_accuracy == pytest.approx(np.mean(plain))
