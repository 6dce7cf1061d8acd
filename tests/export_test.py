"""A run's exported models (crest/export.py, libml/export.py): the SavedModel gives the
run's own test probabilities, model.keras loads and gives them in a process without
this code, classes.json and model.json say what they should; exporting draws no
random number, replaces a half-written export, and works on a streamed run."""

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from crest import export
from crest import predict as predict_lib
from libml import export as export_lib
from libml import folds, metrics, models, records
from tests import fakes

# Tolerances: float32, the built-in layers round differently from the run's fused batch
# norm (measured up to 3e-7). bf16 runs computed their test probabilities in bfloat16 (8
# significant bits), the export in float32: measured up to 1.5e-3 after 6 steps.
ATOL = {'float32': 1e-5, 'bf16': 1e-2}


def _test_images(run):
    fold_dir = os.path.join(run, 'data')
    return folds.read_split(
        fold_dir, 'test', records.read_json(os.path.join(fold_dir, 'counts.json'))
    )


@pytest.mark.parametrize('precision', ['float32', 'bf16'])
def test_the_saved_model_gives_the_runs_test_probabilities(tiny_run, precision):
    run = tiny_run(precision)
    test = _test_images(run)
    results = records.read_json(os.path.join(run, 'results.json'))
    for g, generation in enumerate(results['generations']):
        gen_dir = os.path.join(run, f'gen_{g:02d}')
        expected = np.load(os.path.join(gen_dir, 'test_probs.npy'))
        classes = export.read_classes(gen_dir)
        serve = tf.saved_model.load(os.path.join(gen_dir, 'saved_model')).signatures[
            'serving_default'
        ]
        out = serve(images=tf.constant(test.images))
        np.testing.assert_allclose(out['probabilities'], expected, atol=ATOL[precision])
        # The logit adjustment of the run's own test numbers: its prior, tau = 1.
        np.testing.assert_allclose(
            classes['la_prior'], generation['test']['la_prior'], atol=1e-6, rtol=0
        )
        np.testing.assert_allclose(
            out['probabilities_la'],
            metrics.logit_adjusted(expected, classes['la_prior']),
            atol=ATOL[precision] * 5,
        )
        # Any number of images.
        one = serve(images=tf.constant(test.images[:1]))['probabilities']
        np.testing.assert_allclose(one, out['probabilities'][:1], atol=1e-6)
        assert classes['class_names'] == results['class_names']
        assert classes['labeled_counts'] == results['labeled_counts']
        assert sum(classes['train_counts']) == generation['labeled_size']
        assert (classes['image_size'], classes['channels']) == (28, 1)
        assert classes['precision'] == precision and classes['generation'] == g


@pytest.mark.parametrize('precision', ['float32', 'bf16'])
def test_model_keras_loads_and_predicts_in_a_process_without_this_code(
    tiny_run, precision, tmp_path
):
    run = tiny_run(precision)
    gen_dir = os.path.join(run, 'gen_01')
    images = _test_images(run).images
    np.save(tmp_path / 'images.npy', images)
    source = textwrap.dedent(
        """
        import json, sys
        sys.modules['libml'] = sys.modules['crest'] = None  # Importing them fails.
        import keras, numpy as np
        model = keras.saving.load_model(sys.argv[1])
        images = np.load(sys.argv[2])
        print('RESULT ' + json.dumps({
            'uint8': model.predict(images, verbose=0).tolist(),
            'float32': model(images.astype('float32')).numpy().tolist(),
            'dtypes': sorted({layer.dtype_policy.name for layer in model.layers}),
        }))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    proc = subprocess.run(
        # -I: neither the current folder nor PYTHONPATH on sys.path.
        [
            sys.executable,
            '-I',
            '-c',
            source,
            f'{gen_dir}/model.keras',
            str(tmp_path / 'images.npy'),
        ],
        cwd=tmp_path,
        env={**env, 'TF_CPP_MIN_LOG_LEVEL': '3'},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[0][len('RESULT ') :])
    expected = np.load(os.path.join(gen_dir, 'test_probs.npy'))
    np.testing.assert_allclose(out['uint8'], expected, atol=ATOL[precision])
    np.testing.assert_allclose(out['float32'], out['uint8'], atol=1e-6)
    assert out['dtypes'] == ['float32']


def test_model_json_names_the_last_generation(tiny_run):
    run = tiny_run()
    pointer = records.read_json(os.path.join(run, 'model.json'))
    assert pointer['generation'] == 1 and pointer['export'] == 'gen_01'
    for key in ('keras', 'saved_model', 'classes'):
        assert os.path.exists(os.path.join(run, pointer[key])), key
    assert export.find(run) == os.path.join(run, 'gen_01')
    assert export.find(os.path.join(run, 'gen_00', 'saved_model')) == os.path.join(run, 'gen_00')


def test_a_run_finished_before_exports_existed_resumes_without_one(tiny_run, tmp_path):
    """Its finished generations are left as they are: no export, no model.json."""
    run = str(tmp_path / 'run')
    shutil.copytree(tiny_run(), run)
    os.remove(os.path.join(run, 'model.json'))
    for g in range(2):
        gen_dir = os.path.join(run, f'gen_{g:02d}')
        for name in ('classes.json', 'model.keras'):
            os.remove(os.path.join(gen_dir, name))
        shutil.rmtree(os.path.join(gen_dir, 'saved_model'))
    before = fakes.run_outcome(run)
    fakes.tiny_run(run)
    assert fakes.run_outcome(run) == before
    assert not os.path.exists(os.path.join(run, 'model.json'))
    with pytest.raises(ValueError, match='no exported model'):
        export.find(run)


def _net(arch='cnn_small', shape=(12, 12, 1), precision='float32'):
    """A fresh backbone of 4 classes, its batch norm weights and statistics and its
    biases moved off their initial values (which a copy would get without copying)."""
    net = models.build_model(arch, 4, shape, precision)
    rng = np.random.default_rng(0)
    for v in net.weights:
        if len(v.shape) == 1:
            v.assign(rng.uniform(0.2, 0.8, v.shape).astype(np.float32))
    return net


def test_the_portable_model_draws_no_random_number():
    net = _net()
    state = random.getstate(), np.random.get_state()[1].copy()
    export_lib.portable_model(net)
    assert random.getstate() == state[0]
    np.testing.assert_array_equal(np.random.get_state()[1], state[1])


@pytest.mark.parametrize('arch', sorted(models.ARCHS))
def test_the_portable_model_holds_builtin_layers_only_and_computes_the_same(arch):
    from libml import train

    precision = 'bf16' if arch == 'cnn_small' else 'float32'
    net = _net(arch, (32, 32, 3), precision)
    model = export_lib.portable_model(net)
    layers = list(models._layers(model))
    assert {type(layer).__module__.split('.')[0] for layer in layers} == {'keras'}
    assert {layer.dtype_policy.name for layer in layers} == {'float32'}
    pixels = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    expected = train.predict(net, pixels)
    np.testing.assert_allclose(model(pixels.astype(np.float32)), expected, atol=ATOL[precision])


def test_an_export_replaces_a_half_written_one(tmp_path):
    gen_dir = tmp_path / 'gen_00'
    os.makedirs(gen_dir / 'saved_model.tmp-123' / 'variables')  # Left by a crash.
    (gen_dir / 'model.keras.tmp-456.keras').write_bytes(b'half')
    os.makedirs(gen_dir / 'saved_model')
    (gen_dir / 'saved_model' / 'stale').write_bytes(b'')
    args = (['a', 'b', 'c', 'd'], [4, 3, 2, 1], [5, 3, 2, 1], np.array([5, 3, 2, 1]) / 11, {})
    export.export_generation(str(gen_dir), _net(), *args)
    assert sorted(os.listdir(gen_dir)) == ['classes.json', 'model.keras', 'saved_model']
    assert not os.path.exists(gen_dir / 'saved_model' / 'stale')
    model = predict_lib.load_model(str(gen_dir))
    out = model.serve(images=tf.zeros([2, 12, 12, 1], tf.uint8))
    assert out['probabilities'].shape == (2, 4)
    keras.saving.load_model(str(gen_dir / 'model.keras'))


def test_a_streamed_run_exports_its_model(tmp_path):
    cfg = fakes.tiny_run(tmp_path / 'run', stream='always', generations=1, steps_per_generation=2)
    gen_dir = os.path.join(cfg.workdir, 'gen_00')
    assert export.read_classes(gen_dir)['image_size'] == 28
    test = _test_images(cfg.workdir)
    serve = predict_lib.load_model(cfg.workdir).serve
    np.testing.assert_allclose(
        serve(images=tf.constant(test.images))['probabilities'],
        np.load(os.path.join(gen_dir, 'test_probs.npy')),
        atol=ATOL['float32'],
    )


@pytest.mark.slow
def test_exporting_leaves_every_other_output_of_a_run_unchanged(tmp_path):
    """The same run with and without exports, each in a fresh process with op
    determinism on: results, picks, exported labeled sets and test probabilities equal."""
    source = textwrap.dedent(
        """
        import json, sys
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
        from crest import export
        from tests import fakes
        if sys.argv[2] == 'off':
            export.export_generation = lambda *args: None
        fakes.tiny_run(sys.argv[1])
        print('RESULT ' + json.dumps(fakes.run_outcome(sys.argv[1])))
        """
    )
    on = fakes.run_python(source, str(tmp_path / 'on'), 'on')
    off = fakes.run_python(source, str(tmp_path / 'off'), 'off')
    assert os.path.exists(tmp_path / 'on' / 'gen_01' / 'model.keras')
    assert not os.path.exists(tmp_path / 'off' / 'gen_01' / 'model.keras')
    assert on == off
