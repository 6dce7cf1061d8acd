"""TensorBoard: a tiny run's event files hold class-named scalars, the generation's
pictures and its HParams session, with the run's values."""

import dataclasses
import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import plugin_data_pb2

from crest import config as config_lib
from crest import loop, summaries
from libml import datasets, records, train
from tests import fakes


def test_class_tag_is_index_and_name_as_one_tag_level():
    names = ['T-shirt/top', 'Dress', 'ankle boot (rare)', 'été']
    assert [train.class_tag(c, names) for c in range(4)] == [
        '0_T-shirt_top',
        '1_Dress',
        '2_ankle_boot__rare_',
        '3_été',
    ]
    assert train.class_tag(3) == 'class_03'


def test_method_name_follows_the_presets_names():
    cfg = config_lib.Config(algorithm='fixmatch', generations=6, dist_align='progressive')
    assert summaries.method_name(cfg) == 'fixmatch_crest_plus'
    assert summaries.method_name(dataclasses.replace(cfg, dist_align='none')) == 'fixmatch_crest'
    single = dataclasses.replace(cfg, generations=1, dist_align='none')
    assert summaries.method_name(single) == 'fixmatch'
    assert summaries.method_name(dataclasses.replace(single, method='fixmatch_rs')) == 'fixmatch_rs'


def read_events(folder):
    """{tag: [(step, value proto), ...]} of every event file in `folder`."""
    found = {}
    for path in sorted(glob.glob(os.path.join(folder, 'events.out.tfevents.*'))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value))
    return found


def scalar(value):
    return float(tf.make_ndarray(value.tensor)) if value.HasField('tensor') else value.simple_value


@pytest.mark.slow
def test_generation_summaries_in_event_files(tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, 'tiny', fakes.tiny())
    cfg = config_lib.Config(
        workdir=str(tmp_path / 'run'),
        dataset='tiny',
        imbalance=8,
        label_fraction=0.3,
        fold=2,
        arch='cnn_small',
        generations=1,
        steps_per_generation=4,
        eval_every=2,
        batch_size=8,
        uratio=2,
        ema_warmup=True,
        seed=5,
    )
    run = loop.run(cfg, log=lambda _: None)
    generation = run.generations[0]
    events = read_events(os.path.join(cfg.workdir, 'gen_00', 'tb'))

    # Per-class scalars are tagged by class index and name, at every evaluation.
    for c, name in enumerate(run.class_names):
        for metric in ('recall', 'precision', 'recall_la'):
            assert [s for s, _ in events[f'{metric}/{c}_{name}']] == [2, 4]
    assert not [t for t in events if '/class_' in t]
    last = records.read_json(os.path.join(cfg.workdir, 'gen_00', 'evals.json'))[-1]
    logged = [scalar(events[f'recall/{c}_{n}'][-1][1]) for c, n in enumerate(run.class_names)]
    np.testing.assert_allclose(logged, last['recall'], rtol=1e-6)

    # The pictures, once, at the generation's last step: PNGs of a readable size.
    for tag in summaries.IMAGES:
        [(step, value)] = events[tag]
        assert step == 4 and value.metadata.plugin_data.plugin_name == 'images'
        width, height, png = tf.make_ndarray(value.tensor)
        image = tf.io.decode_png(png).numpy()
        assert image.shape == (int(height), int(width), 3)
        assert image.shape[0] >= 200 and image.shape[1] >= 400
        assert image.std() > 10  # Something is drawn.

    # The HParams session: the run's settings, and the experiment's columns.
    [(_, start)] = events['_hparams_/session_start_info']
    data = plugin_data_pb2.HParamsPluginData.FromString(start.metadata.plugin_data.content)
    values = {
        k: getattr(v, v.WhichOneof('kind')) for k, v in data.session_start_info.hparams.items()
    }
    assert values['dataset'] == 'tiny' and values['algorithm'] == 'fixmatch'
    assert values['method'] == 'fixmatch_da'
    assert (values['fold'], values['seed'], values['generation']) == (2, 5, 0)
    assert (values['imbalance'], values['label_fraction']) == (8, 0.3)
    assert values['generations'] == 1 and values['steps_per_generation'] == 4
    [(_, experiment)] = events['_hparams_/experiment']
    data = plugin_data_pb2.HParamsPluginData.FromString(experiment.metadata.plugin_data.content)
    assert [h.name for h in data.experiment.hparam_infos] == list(summaries.HPARAMS)
    shown = [h.name for h in data.experiment.hparam_infos if h.differs]
    assert sorted(shown) == sorted(summaries.SHOWN) and 'method' in shown
    assert [m.name.tag for m in data.experiment.metric_infos] == list(summaries.METRICS)
    # The metrics' values: the generation's reported numbers.
    [(step, value)] = events['result/balanced_accuracy']
    assert step == 4 and scalar(value) == pytest.approx(generation.balanced_accuracy)
    [(_, value)] = events['result/balanced_accuracy_la']
    assert scalar(value) == pytest.approx(generation.balanced_accuracy_la)


def test_confusion_counts_come_from_the_test_probabilities(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(summaries, 'confusion_figure', lambda names, m: drawn.update(m=m))
    monkeypatch.setattr(summaries, 'render', lambda figure: np.zeros((2, 2, 3), np.uint8))
    run = fakes.run_results(0.5, [1, 0.5], [0.5, 1], [3, 1], [4, 2], ['a', 'b'])
    cfg = config_lib.Config(generations=1, steps_per_generation=7, algorithm='fixmatch')
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    summaries.write_generation(str(tmp_path), cfg, run.generations[0], ['a', 'b'], labels, probs)
    np.testing.assert_array_equal(drawn['m'], [[2, 0], [1, 1]])
    assert set(summaries.IMAGES) <= set(read_events(str(tmp_path)))
