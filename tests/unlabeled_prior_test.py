"""Unlabeled images whose class distribution is not the labeled one: the uniform and
reversed protocols (--unlabeled_distribution), and CReST+ aligned to the unlabeled
distribution estimated by EM (--unlabeled_prior=estimated)."""

import dataclasses
import os

import numpy as np
import pytest

from crest import config as config_lib
from crest import loop, rebalance
from crest.results import Generation, Results
from libml import datasets, folds, lt, records
from tests import fakes


def test_unlabeled_profiles_by_hand():
    # Head 100, gamma 4, 3 classes: the long tail is 100, 50, 25; at beta = 0.1 the
    # labeled counts are 10, 5, 3 (ceil 2.5). With M_1 = 40 the uniform profile keeps 40
    # of each class, the reversed one 40 * 4^(-(2-l)/2): 10, 20, 40.
    assert lt.labeled_counts(lt.longtail_counts(100, 3, 4), 0.1) == [10, 5, 3]
    assert lt.unlabeled_counts(40, 3, 4, 'uniform') == [40, 40, 40]
    assert lt.unlabeled_counts(40, 3, 4, 'reversed') == [10, 20, 40]
    with pytest.raises(ValueError, match="'uniform' or 'reversed'"):
        lt.unlabeled_counts(40, 3, 4, 'same')


def test_profile_split_draws_per_class_counts_by_fold():
    labels = np.repeat(np.arange(3), 50)
    labeled, unlabeled = lt.profile_split(labels, [10, 5, 3], [10, 20, 40], fold=1)
    assert np.bincount(labels[labeled]).tolist() == [10, 5, 3]
    assert np.bincount(labels[unlabeled]).tolist() == [10, 20, 40]
    assert not set(labeled) & set(unlabeled)
    again = lt.profile_split(labels, [10, 5, 3], [10, 20, 40], fold=1)
    other = lt.profile_split(labels, [10, 5, 3], [10, 20, 40], fold=2)
    assert np.array_equal(again[0], labeled) and not np.array_equal(other[0], labeled)
    with pytest.raises(ValueError, match='class 2 has 50 images, the two profiles need 3'):
        lt.profile_split(labels, [10, 5, 3], [10, 20, 48], fold=1)


def tiny_spec(distribution, **changes):
    return folds.FoldSpec(
        imbalance=8, label_fraction=0.3, unlabeled_distribution=distribution, **changes
    )


@pytest.mark.parametrize('distribution', ['uniform', 'reversed'])
def test_a_fold_of_a_profile_keeps_the_labeled_counts_and_records_the_profile(
    tmp_path, distribution
):
    tiny = fakes.tiny(unlabeled_head=16)
    same = folds.create_fold(tiny, tiny_spec('same'), str(tmp_path / 'same'), lambda _: None)
    summary = folds.create_fold(
        tiny, tiny_spec(distribution), str(tmp_path / distribution), lambda _: None
    )
    assert summary['unlabeled_distribution'] == distribution
    assert summary['labeled'] == same['labeled']  # Only the unlabeled images change.
    expected = {
        # M_1 = 16 of every class; or 16 * 8^(-(9-l)/9) floored: 2 for class 0, 16 for 9.
        'uniform': [16] * 10,
        'reversed': lt.longtail_counts(16, 10, 8)[::-1],
    }[distribution]
    assert summary['unlabeled'] == expected
    assert summary['unlabeled'][0] == (16 if distribution == 'uniform' else 2)
    assert summary['unlabeled_profile'] == dict(
        distribution=distribution, head=16, labeled=same['labeled'], unlabeled=expected
    )
    assert 'unlabeled_distribution' not in same  # 'same' keeps the folds made before.
    assert summary['test'] == same['test']


def test_a_fold_of_another_distribution_is_not_reused(tmp_path):
    tiny, out = fakes.tiny(unlabeled_head=16), str(tmp_path / 'fold')
    folds.create_fold(tiny, tiny_spec('uniform'), out, lambda _: None)
    with pytest.raises(records.DataError, match='holds another fold'):
        folds.ensure_fold(tiny, tiny_spec('same'), out, lambda _: None)
    folds.create_fold(tiny, tiny_spec('same'), out, lambda _: None)
    with pytest.raises(records.DataError, match='holds another fold'):
        folds.ensure_fold(tiny, tiny_spec('reversed'), out, lambda _: None)


def test_a_profile_the_source_cannot_fill_names_the_flags(tmp_path):
    tiny = fakes.tiny(unlabeled_head=28)  # Class 0: 8 labeled + 28 > its 30 images.
    with pytest.raises(records.DataError, match=r'needs 8 labeled \(--label_fraction=0.3\)'):
        folds.create_fold(tiny, tiny_spec('uniform'), str(tmp_path / 'f'), lambda _: None)
    assert not os.path.exists(tmp_path / 'f' / folds.COUNTS_FILE)


@pytest.mark.parametrize(
    'dataset, message',
    [
        (fakes.tiny(), 'it has no unlabeled profile of its own'),
        (fakes.tiny(head_count=8, darp_unlabeled_head=16), 'no unlabeled profile'),
        (datasets.DATASETS['folder'], 'its unlabeled images are the ones it has'),
    ],
)
def test_a_data_set_without_a_profile_refuses_it_in_one_line(dataset, message, tmp_path):
    spec = tiny_spec('reversed', data_dir=str(tmp_path))
    with pytest.raises(
        ValueError, match=f"--unlabeled_distribution must be 'same' for .*{message}"
    ):
        dataset.check(dataclasses.replace(spec, fold=1))


def test_an_unknown_distribution_is_refused():
    with pytest.raises(ValueError, match='--unlabeled_distribution must be one of'):
        tiny_spec('flat')


def synthetic_posteriors(train_prior, true_prior, n, seed=0):
    """Posteriors of a model that knows the class likelihoods exactly (1-D Gaussians at
    -2, 0, 2 of unit variance) and was trained under `train_prior`, on n points drawn
    under `true_prior`: Bayes' rule, the calibrated case EM assumes."""
    rng = np.random.RandomState(seed)
    means = np.array([-2.0, 0.0, 2.0])
    labels = rng.choice(3, size=n, p=true_prior)
    x = rng.normal(means[labels], 1.0)
    likelihood = np.exp(-0.5 * (x[:, None] - means[None, :]) ** 2)
    joint = likelihood * np.asarray(train_prior)
    return joint / joint.sum(axis=1, keepdims=True), labels


def test_em_recovers_a_known_prior_the_mean_prediction_misses():
    train_prior, true_prior = [0.7, 0.2, 0.1], [0.1, 0.3, 0.6]
    probs, labels = synthetic_posteriors(train_prior, true_prior, 40_000)
    sample = np.bincount(labels, minlength=3) / len(labels)
    estimate = rebalance.em_prior(probs, train_prior)
    assert np.abs(estimate - sample).sum() < 0.03
    assert np.abs(probs.mean(axis=0) - sample).sum() > 0.2  # Pulled towards train_prior.
    assert estimate.sum() == pytest.approx(1.0)
    # Under its own training prior the model's predictions need no correction.
    probs, labels = synthetic_posteriors(train_prior, train_prior, 40_000, seed=1)
    estimate = rebalance.em_prior(probs, train_prior)
    assert np.abs(estimate - np.bincount(labels) / len(labels)).sum() < 0.03


def test_em_keeps_every_class_above_its_floor():
    probs = np.tile([[0.5, 0.5, 0.0]], (100, 1))  # Class 2 is never predicted.
    estimate = rebalance.em_prior(probs, [0.4, 0.4, 0.2], floor=0.03)
    assert estimate[2] == pytest.approx(0.01 / (1 + 0.01), rel=1e-6)
    with pytest.raises(ValueError, match=r'need predictions \[N > 0, 3\]'):
        rebalance.em_prior(np.zeros((0, 3)), [0.4, 0.4, 0.2])
    with pytest.raises(ValueError, match='training prior needs every class'):
        rebalance.em_prior(probs, [0.5, 0.5, 0.0])


@pytest.fixture
def tiny_config(tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, 'tiny', fakes.tiny(unlabeled_head=16))
    return fakes.tiny_config(tmp_path / 'run')


def spy_on_alignment(monkeypatch) -> list:
    """The priors each generation's alignment target is flattened from, in order."""
    bases = []
    target = rebalance.alignment_target
    monkeypatch.setattr(
        loop.rebalance,
        'alignment_target',
        lambda prior, t: bases.append(np.asarray(prior).copy()) or target(prior, t),
    )
    return bases


@pytest.mark.parametrize('distribution', ['same', 'uniform', 'reversed'])
@pytest.mark.parametrize('prior', ['labeled', 'estimated'])
def test_each_protocol_runs_end_to_end_with_each_prior(
    tiny_config, monkeypatch, distribution, prior
):
    cfg = dataclasses.replace(
        tiny_config, unlabeled_distribution=distribution, unlabeled_prior=prior
    )
    if prior == 'labeled':  # Later generations align as in every other test's runs.
        cfg = dataclasses.replace(cfg, generations=1, steps_per_generation=2)
    bases = spy_on_alignment(monkeypatch)
    logs = []
    run = loop.run(cfg, log=logs.append)
    labeled_prior = np.asarray(run.labeled_counts) / sum(run.labeled_counts)
    assert np.allclose(bases[0], labeled_prior)  # Generation 0: the labeled distribution.
    args = records.read_json(os.path.join(cfg.workdir, 'args.json'))
    # Settings at their default stay out of the run's files, as before they existed.
    assert args.get('unlabeled_distribution', 'same') == distribution
    assert ('unlabeled_distribution' in args) == (distribution != 'same')
    assert ('unlabeled_prior' in run.args) == (prior == 'estimated')
    counts = records.read_json(os.path.join(cfg.workdir, 'data', 'counts.json'))
    truth = np.asarray(counts['unlabeled']) / sum(counts['unlabeled'])
    first = run.generations[0].unlabeled_prior
    if prior == 'labeled':
        assert first is None and len(bases) == 1
        return
    assert np.allclose(bases[1], first.estimate)  # Generation 1: generation 0's estimate.
    assert sum(first.estimate) == pytest.approx(1.0, abs=1e-5)
    assert first.error == pytest.approx(np.abs(np.asarray(first.estimate) - truth).sum(), abs=1e-5)
    assert first.error_of_labeled == pytest.approx(np.abs(labeled_prior - truth).sum(), abs=1e-5)
    assert any('unlabeled class distribution by EM' in m and 'L1 error' in m for m in logs)
    # Recorded in metrics.json; a resumed run aligns generation 1 to the same target.
    path = os.path.join(cfg.workdir, 'gen_00', 'metrics.json')
    assert Generation.from_json(records.read_json(path)).unlabeled_prior == first
    os.remove(os.path.join(cfg.workdir, 'gen_01', 'metrics.json'))
    os.remove(os.path.join(cfg.workdir, 'results.json'))
    bases.clear()
    again = loop.run(cfg, log=lambda _: None)
    assert len(bases) == 1 and np.allclose(bases[0], first.estimate)
    for results in (run, again):
        for generation in results.generations:
            generation.seconds = None
    assert again == run


def test_a_run_made_before_the_settings_existed_resumes(tiny_config):
    cfg = config_lib.resolve(tiny_config)
    saved = config_lib.saved_settings(cfg)
    assert 'unlabeled_prior' not in saved and 'unlabeled_distribution' not in saved
    assert config_lib.changed_settings(saved, cfg) == []
    changed = dataclasses.replace(cfg, unlabeled_prior='estimated')
    assert config_lib.changed_settings(saved, changed) == ['unlabeled_prior']


def test_results_of_a_run_without_an_estimate_read_back(tiny_config):
    cfg = dataclasses.replace(tiny_config, generations=1)
    run = loop.run(cfg, log=lambda _: None)
    read = Results.read(os.path.join(cfg.workdir, 'results.json'))
    assert read == run and read.generations[0].unlabeled_prior is None


def test_the_committed_study_document_is_what_its_records_give():
    from study import unlabeled

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, 'docs', 'unlabeled.md')) as f:
        committed = f.read()
    records_dir = os.path.join(root, 'docs', 'evidence', 'unlabeled')
    assert unlabeled.document(records_dir) == committed
    assert 'Still to run' not in committed  # Every cell's record is kept.
