"""End to end: two CReST+ generations of every algorithm on tiny data in the official IDX
format."""

import dataclasses
import os

import numpy as np
import pytest

from crest import config as config_lib
from crest import loop, rebalance
from crest.results import Results
from libml import datasets, folds, lt, records
from libml.algorithms import ALGORITHMS
from tests import fakes


@pytest.fixture
def tiny_config(tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, 'tiny', fakes.tiny())
    return fakes.tiny_config(tmp_path / 'run')


def spy_on_picks(monkeypatch) -> list:
    """The list every generation's picks are appended to, as the loop selects them."""
    selections = []
    select = rebalance.select_by_confidence
    monkeypatch.setattr(
        loop.rebalance,
        'select_by_confidence',
        lambda *args: selections.append(select(*args)) or selections[-1],
    )
    return selections


@pytest.mark.parametrize('algorithm', sorted(ALGORITHMS))
def test_two_generations_export_original_plus_picks(algorithm, tiny_config, monkeypatch):
    cfg = dataclasses.replace(tiny_config, algorithm=algorithm)
    selections = []  # (predicted, confidence, picks) of each generation, spied on.
    select = rebalance.select_by_confidence

    def spy(predicted, confidence, rates):
        picks = select(predicted, confidence, rates)
        selections.append((predicted, confidence, picks))
        return picks

    monkeypatch.setattr(loop.rebalance, 'select_by_confidence', spy)
    logs = []
    results = loop.run(cfg, log=logs.append)

    fold = os.path.join(cfg.workdir, 'data')
    original = records.read_records(os.path.join(fold, 'labeled.tfrecord'))
    unlabeled = records.read_records(os.path.join(fold, 'unlabeled.tfrecord'))
    assert len(selections) == 2
    for g, (predicted, confidence, picks) in enumerate(selections):
        exported = records.read_records(
            os.path.join(cfg.workdir, f'gen_{g:02d}', 'labeled.tfrecord')
        )
        pseudo = exported.pseudo == 1
        # Exactly the original labeled ids, with their true labels, plus the picked ids.
        np.testing.assert_array_equal(exported.ids[~pseudo], original.ids)
        np.testing.assert_array_equal(exported.labels[~pseudo], original.labels)
        np.testing.assert_array_equal(exported.ids[pseudo], unlabeled.ids[picks])
        # Picks carry the predicted class and its confidence.
        np.testing.assert_array_equal(exported.labels[pseudo], predicted[picks])
        np.testing.assert_allclose(exported.confidence[pseudo], confidence[picks], rtol=1e-6)
        assert results.generations[g].picks.total_picked == len(picks)

    # Generation 1 trained on generation 0's export; temperatures follow eq. 2 (G=2) down
    # to the algorithm's t_min (0.5 for FixMatch, 0.8 for MixMatch).
    t_min = ALGORITHMS[algorithm].PAPER_SETTINGS['t_min']
    gen0, gen1 = results.generations
    assert gen1.labeled_size == len(original) + len(selections[0][2])
    assert (gen0.temperature, gen1.temperature) == (1.0, t_min)
    assert results.args['t_min'] == t_min
    assert [e.step for e in gen1.evals] == [2, 4]
    assert 0 <= results.balanced_accuracy <= 1
    assert len(gen1.unlabeled.recall) == 10
    saved = Results.read(os.path.join(cfg.workdir, 'results.json'))
    assert saved.balanced_accuracy == results.balanced_accuracy
    # The last line points to the diagnosis, with FixMatch's minority-half numbers.
    assert logs[-1].startswith('generation 0 on the unlabeled set, minority half')
    assert logs[-1].endswith(f'python scripts/diagnose.py --run={cfg.workdir}')
    # The one before to the model and how to use it.
    assert logs[-2].startswith(f'its model: {cfg.workdir}/gen_01/model.keras; classify')
    assert logs[-2].endswith(f'predict.py --model={cfg.workdir} --images=FOLDER')

    # A re-run skips finished generations and returns the same numbers.
    logs.clear()
    again = loop.run(cfg, log=logs.append)
    assert sum('finished earlier, skipped' in line for line in logs) == 2
    assert again.generations == results.generations


def test_rerun_with_other_settings_is_refused(tiny_config):
    cfg = dataclasses.replace(tiny_config, generations=1)
    loop.run(cfg, log=lambda _: None)
    with pytest.raises(ValueError, match='--alpha'):
        loop.run(dataclasses.replace(cfg, alpha=0.5), log=lambda _: None)


class _Stop(Exception):
    """Raised in place of training: what a run writes before it is all a test reads."""


@pytest.mark.parametrize('class_order', [[6, 4, 2, 0, 9, 1, 3, 5, 7, 8], 3, 0])
def test_class_order_is_recorded_logged_and_resumed(tiny_config, monkeypatch, class_order):
    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(loop, 'run_generation', stop)
    cfg = dataclasses.replace(tiny_config, class_order=class_order)
    logs = []
    with pytest.raises(_Stop):
        loop.run(cfg, log=logs.append)
    args = records.read_json(os.path.join(cfg.workdir, 'args.json'))
    assert args['class_order'] == class_order and type(args['class_order']) is type(class_order)
    counts = records.read_json(os.path.join(cfg.workdir, 'data', 'counts.json'))
    assert counts.get('class_order', 0) == class_order
    assert ('class_order' in counts) == bool(class_order)  # 0 stays unnamed, as before.
    names = datasets.DATASETS['tiny'].class_names
    assert counts['class_names'] == [names[c] for c in lt.class_order(10, class_order)]
    (line,) = [m for m in logs if m.startswith('tiny (fold 1')]
    assert line.startswith(
        f'tiny (fold 1, class order {class_order}):' if class_order else 'tiny (fold 1):'
    )
    with pytest.raises(_Stop):  # The same order resumes the run.
        loop.run(cfg, log=logs.append)
    with pytest.raises(ValueError, match='other values of --class_order; use another'):
        loop.run(
            dataclasses.replace(cfg, class_order=[8, 7, 5, 3, 1, 9, 0, 2, 4, 6]), log=logs.append
        )


def test_an_imbalance_that_empties_a_class_is_an_error(tiny_config):
    # N_10 = floor(24 / 30) = 0: the tail class would have no image at all.
    cfg = dataclasses.replace(tiny_config, imbalance=30)
    with pytest.raises(ValueError, match=r'--imbalance must be in \[1, 24\] for tiny'):
        loop.run(cfg, log=lambda _: None)
    assert not os.path.exists(cfg.workdir)


def test_darp_protocol_runs_end_to_end(tiny_config, monkeypatch):
    """The tiny data set under DARP's protocol (N_1 = 8 labeled, M_1 = 16 unlabeled):
    the fixed split, then a generation that exports the original ids plus its picks."""
    darp = fakes.tiny('tiny_darp', head_count=8, darp_unlabeled_head=16)
    monkeypatch.setitem(datasets.DATASETS, 'tiny_darp', darp)
    cfg = dataclasses.replace(
        tiny_config, dataset='tiny_darp', imbalance=4, generations=1, steps_per_generation=2
    )
    logs = []
    loop.run(cfg, log=logs.append)
    assert any("tiny_darp (DARP's fixed split; --label_fraction unused)" in m for m in logs)
    summary = records.read_json(os.path.join(cfg.workdir, 'data', 'counts.json'))
    assert summary['labeled'] == [8, 6, 5, 5, 4, 3, 3, 2, 2, 2]
    assert summary['unlabeled'] == [16, 13, 11, 10, 8, 7, 6, 5, 4, 4]
    original = folds.read_split(os.path.join(cfg.workdir, 'data'), 'labeled', summary)
    exported = records.read_records(os.path.join(cfg.workdir, 'gen_00', 'labeled.tfrecord'))
    assert sorted(exported.ids[exported.pseudo == 0]) == sorted(original.ids)
    with pytest.raises(ValueError, match='--fold must be 1 for tiny_darp'):
        loop.run(dataclasses.replace(cfg, fold=2, workdir=cfg.workdir + '2'))


def test_an_image_folder_runs_end_to_end_and_exports_original_plus_picks(tmp_path, monkeypatch):
    """The user's own images (--dataset=folder), two generations: generation 1 trains on
    exactly the original labeled files plus generation 0's picks, traced to their files."""
    from PIL import Image

    rng = np.random.default_rng(0)
    # Class folders named so that their order is not their labeled-count order.
    layout = {'labeled/b': 2, 'labeled/a': 6, 'labeled/c': 3, 'unlabeled/a': 9, 'unlabeled': 9}
    layout.update({'test/a': 2, 'test/b': 2, 'test/c': 2})
    for folder, n in layout.items():
        os.makedirs(tmp_path / 'images' / folder, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (14, 14, 3), np.uint8)
            Image.fromarray(pixels).save(tmp_path / 'images' / folder / f'{i}.png')
    selections = spy_on_picks(monkeypatch)
    cfg = config_lib.Config(
        workdir=str(tmp_path / 'run'),
        dataset='folder',
        data_dir=str(tmp_path / 'images'),
        image_size=12,
        arch='cnn_small',
        generations=2,
        alpha=0,  # Keep every pseudo-label, so that the picks are not empty.
        steps_per_generation=2,
        eval_every=2,
        batch_size=4,
        uratio=2,
        ema_warmup=True,
    )
    logs = []
    results = loop.run(cfg, log=logs.append)
    assert any('labeled per class: a 6, c 3, b 2' in m for m in logs)
    assert results.class_names == ['a', 'c', 'b']
    fold = os.path.join(cfg.workdir, 'data')
    summary = records.read_json(os.path.join(fold, folds.COUNTS_FILE))
    paths = records.read_json(os.path.join(fold, folds.PATHS_FILE))['train']
    original = folds.read_split(fold, 'labeled', summary)
    unlabeled = folds.read_split(fold, 'unlabeled', summary)
    assert original.images.shape[1:] == (12, 12, 3)
    exported = records.read_records(os.path.join(cfg.workdir, 'gen_00', 'labeled.tfrecord'))
    pseudo = exported.pseudo == 1
    assert len(selections[0]) == 18
    np.testing.assert_array_equal(exported.ids[~pseudo], original.ids)
    np.testing.assert_array_equal(exported.ids[pseudo], unlabeled.ids[selections[0]])
    assert sorted(paths[i] for i in exported.ids) == sorted(
        p for p in paths if p.startswith('labeled/')
    ) + sorted(p for p in paths if p.startswith('unlabeled/'))
    assert results.generations[1].labeled_size == 11 + 18
    # Every pick is counted by predicted class; precision only over the 9 picks whose
    # class is known (unlabeled/a).
    picks = results.generations[0].picks
    assert picks.unknown_class == 9 and sum(picks.picked) == 18
    assert sum(picks.picked_known) == 9
    assert results.generations[0].unlabeled.predicted is not None


def test_a_streamed_run_exports_original_plus_picks_and_resumes(tiny_config, monkeypatch):
    """--stream=always: images never held in memory; the export holds the original ids
    and the picks; a finished run is skipped on a re-run."""
    selections = spy_on_picks(monkeypatch)
    read = records.read_records

    def no_images(*args, images=True, **kwargs):
        assert not images, 'a streamed run read images into memory'
        return read(*args, images=images, **kwargs)

    monkeypatch.setattr(records, 'read_records', no_images)
    cfg = dataclasses.replace(tiny_config, stream='always')
    logs = []
    results = loop.run(cfg, log=logs.append)
    assert any('images streamed from' in m for m in logs)
    fold = os.path.join(cfg.workdir, 'data')
    original, unlabeled = (read(os.path.join(fold, f'{s}.tfrecord')) for s in folds.SPLITS[:2])
    for g, picks in enumerate(selections):
        exported = read(os.path.join(cfg.workdir, f'gen_{g:02d}', 'labeled.tfrecord'))
        pseudo = exported.pseudo == 1
        np.testing.assert_array_equal(exported.ids[~pseudo], original.ids)
        assert sorted(exported.ids[pseudo]) == sorted(unlabeled.ids[picks])
    assert results.generations[1].labeled_size == len(original) + len(selections[0])
    logs.clear()
    assert loop.run(cfg, log=logs.append).generations == results.generations
    assert sum('finished earlier, skipped' in line for line in logs) == 2


def test_pick_summary_counts_every_pick_and_checks_the_known_ones():
    """Picks of 4 images of class 0, 1, unknown, unknown predicted 0, 0, 1, 1: `picked`
    counts all 4 by predicted class, `picked_known` the 2 of known class; precision is
    1 of 2 for class 0; nothing of class 1 is checkable. Without unknown picks
    `picked_known` is left out of picks.json."""
    unlabeled = records.Records(
        ids=np.arange(5), labels=np.array([0, 1, -1, -1, 0]), images=np.zeros((5, 1, 1, 1))
    )
    predicted = np.array([0, 0, 1, 1, 0])
    rates = np.array([1.0, 1.0])
    picks = loop.pick_summary(unlabeled, np.array([0, 1, 2, 3]), predicted, rates)
    assert picks.picked == [2, 2] and picks.picked_known == [2, 0]
    assert picks.unknown_class == 2 and picks.correct == [1, 0]
    assert picks.precision == [0.5, 0.0] and picks.total_precision == 0.5
    assert picks.recall == [0.5, 0.0]
    # Every image unknown: nothing to check, yet every pick counted.
    unknown = records.Records(
        ids=np.arange(5), labels=np.full(5, -1), images=np.zeros((5, 1, 1, 1))
    )
    picks = loop.pick_summary(unknown, np.array([0, 1, 2]), predicted, rates)
    assert picks.picked == [2, 1] and picks.correct is None and picks.picked_known is None
    # Every pick known: the record of a built-in run, without the optional fields.
    picks = loop.pick_summary(unlabeled, np.array([0, 1, 4]), predicted, rates)
    assert picks.picked == [3, 0] and picks.precision == [0.666667, 0.0]
    assert 'picked_known' not in picks.to_json() and 'unknown_class' not in picks.to_json()
