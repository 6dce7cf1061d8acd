"""Classifying new images with a run's model (crest/predict.py, scripts/predict.py): the
CSV of a small folder, the logit-adjusted choice, .npz input, progress, and a one-line
error for each kind of bad input."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from crest import predict
from libml import folds, metrics, records
from libml.records import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 12  # Test images written as files.


@pytest.fixture(scope='module')
def setup(tiny_run, tmp_path_factory):
    """(run folder, the model, a folder of the run's first N test images as PNG files in
    two sub-folders plus a text file, the images, gen_01's probabilities of them)."""
    run = tiny_run()
    fold_dir = os.path.join(run, 'data')
    test = folds.read_split(fold_dir, 'test', records.read_json(f'{fold_dir}/counts.json'))
    images = tmp_path_factory.mktemp('images')
    for i in range(N):
        os.makedirs(images / f'part{i % 2}', exist_ok=True)
        Image.fromarray(test.images[i, :, :, 0]).save(images / f'part{i % 2}' / f'{i:02d}.png')
    (images / 'notes.txt').write_text('not an image')
    probs = np.load(os.path.join(run, 'gen_01', 'test_probs.npy'))[:N]
    return run, predict.load_model(run), str(images), test.images[:N], probs


def _order(files):
    """Test image indices of the listed files (named part<k>/<index>.png)."""
    return [int(os.path.basename(f)[:2]) for f in files]


def test_the_csv_holds_every_image_with_its_class_and_top_3(setup, tmp_path):
    run, model, images, _, probs = setup
    assert model.export_dir == os.path.join(run, 'gen_01')
    logs = []
    predictions = predict.predict(model, images, log=logs.append)
    assert any('1 file(s) that are not images left out' in line for line in logs)
    path = tmp_path / 'preds.csv'
    predict.write_csv(predictions, str(path))
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r['file'] for r in rows] == sorted(f'part{i % 2}/{i:02d}.png' for i in range(N))
    names = model.class_names
    for row, i in zip(rows, _order(r['file'] for r in rows), strict=True):
        top = np.argsort(-probs[i], kind='stable')[:3]
        assert row['class'] == names[top[0]]
        assert float(row['confidence']) == pytest.approx(probs[i].max(), abs=1e-4)
        listed = [item.rsplit(':', 1) for item in row['top3'].split(' ')]
        assert [name for name, _ in listed] == [names[c] for c in top]
        np.testing.assert_allclose([float(p) for _, p in listed], probs[i][top], atol=1e-4)
    lines = predict.histogram(predictions)
    assert lines[0] == f'predicted classes of {N} images:'
    counts = np.bincount(probs.argmax(axis=1), minlength=len(names))
    assert [int(line.split()[1]) for line in lines[1:]] == counts.tolist()


def test_la_gives_the_logit_adjusted_probabilities(setup):
    _, model, images, _, probs = setup
    predictions = predict.predict(model, images, la=True, log=lambda _: None)
    expected = metrics.logit_adjusted(probs, model.classes['la_prior'])
    np.testing.assert_allclose(predictions.probs, expected[_order(predictions.files)], atol=1e-5)


def test_images_are_resized_as_in_training_and_batched_with_progress(setup, tmp_path, monkeypatch):
    _, model, _, test_images, probs = setup
    from libml.datasets import image_files

    big = np.stack([np.repeat(np.repeat(x, 2, 0), 2, 1) for x in test_images])  # 56x56
    np.savez(tmp_path / 'big.npz', images=big[..., 0])  # [N, H, W]: gray
    monkeypatch.setattr(predict, 'LOG_EVERY', 5)
    logs = []
    predictions = predict.predict(model, str(tmp_path / 'big.npz'), batch_size=4, log=logs.append)
    assert predictions.files == [f'{tmp_path}/big.npz[{i}]' for i in range(N)]
    assert sum('/12 images' in line for line in logs) == 2  # After 8 and 12 images.
    resized = np.stack([image_files.resize(x, 28) for x in big])
    again = predict.predict(model, str(_npz(tmp_path / 'resized.npz', images=resized)))
    np.testing.assert_array_equal(predictions.probs, again.probs)
    assert np.abs(predictions.probs - probs).max() < 0.5  # Close to the originals' too.


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _cut(path):
    """`path` cut to half its bytes: a damaged zip archive."""
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[: len(data) // 2])
    return str(path)


def _text(path):
    open(path, 'w').write('not arrays')
    return path


def _rgb(path):
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(path)
    return str(path)


@pytest.mark.parametrize(
    'make,message',
    [
        (lambda d: _rgb(d / 'rgb.png'), r'rgb.png: 3 channel\(s\); the model takes gray images'),
        (
            lambda d: str(_npz(d / 'x.npz', a=np.zeros(3), b=np.zeros(3))),
            'x.npz: no array named images \\(it holds a, b\\)',
        ),
        (
            lambda d: str(_npz(d / 'x.npz', images=np.zeros((2, 28, 28), np.float32))),
            r'x.npz: images is float32 \(2, 28, 28\); expected uint8 images',
        ),
        (lambda d: _cut(_npz(d / 'cut.npz', images=np.zeros((9, 28, 28), np.uint8))), 'cut.npz: '),
        (lambda d: str(_text(d / 'text.npz')), r'text.npz: not an .npz file \(not a zip'),
        (lambda d: str(d / 'missing'), 'missing: not found'),
        (lambda d: os.makedirs(d / 'empty') or str(d / 'empty'), 'empty: no image files'),
    ],
)
def test_bad_images_are_one_line_errors(setup, tmp_path, make, message):
    model = setup[1]
    with pytest.raises(DataError, match=message):
        predict.predict(model, make(tmp_path), log=lambda _: None)


def test_an_unreadable_file_stops_or_is_skipped_as_in_training(setup, tmp_path):
    model = setup[1]
    for i in range(3):
        Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(tmp_path / f'{i}.png')
    (tmp_path / '1.png').write_bytes(b'not a png')
    with pytest.raises(DataError, match=r'1.png: not a readable image .*--bad_images=skip'):
        predict.predict(model, str(tmp_path), log=lambda _: None)
    logs = []
    predictions = predict.predict(model, str(tmp_path), bad_images='skip', log=logs.append)
    assert predictions.files == ['0.png', '2.png'] and predictions.skipped == ['1.png']
    assert any(line.startswith('skipped') and '1.png' in line for line in logs)


def test_a_run_without_a_finished_generation_has_no_model(tmp_path):
    records.write_json(str(tmp_path / 'args.json'), {})
    with pytest.raises(ValueError, match='no exported model yet'):
        predict.load_model(str(tmp_path))
    with pytest.raises(ValueError, match='neither a run folder nor an export folder'):
        predict.load_model(str(tmp_path / '..'))


def _script(*args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, 'scripts', 'predict.py'), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_script_writes_the_csv_and_prints_the_histogram(setup, tmp_path):
    run, _, images, _, _ = setup
    output = tmp_path / 'p.csv'
    proc = _script(f'--model={run}/gen_00', f'--images={images}', f'--output={output}')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f'predicted classes of {N} images:' in proc.stdout
    with open(output) as f:
        assert len(list(csv.reader(f))) == N + 1


@pytest.mark.parametrize('bad', ['run', 'channels'])
def test_the_script_stops_with_a_one_line_error(setup, tmp_path, bad):
    run = setup[0]
    if bad == 'run':
        records.write_json(str(tmp_path / 'args.json'), {})
        args, message = [f'--model={tmp_path}', f'--images={tmp_path}'], 'no exported model yet'
    else:
        args, message = [f'--model={run}', f'--images={_rgb(tmp_path / "rgb.png")}'], 'channel'
    proc = _script(*args, f'--output={tmp_path / "p.csv"}')
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and message in last, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    assert not os.path.exists(tmp_path / 'p.csv')
