"""Record files: TFRecord round trips, digests, atomic writes, temporary files, streamed
records and the streamed export."""

import os

import numpy as np
import pytest

from libml import records
from tests import fakes


def test_records_roundtrip_and_corruption(tmp_path):
    rng = np.random.RandomState(0)
    examples = records.Records(
        rng.randint(0, 256, (5, 8, 8, 3)).astype(np.uint8),
        np.array([0, 1, 2, 1, 0]),
        np.array([10, 11, 12, 13, 14]),
        np.array([0, 0, 1, 1, 0]),
        np.array([1, 1, 0.7, 0.9, 1], np.float32),
    )
    path = str(tmp_path / 'x.tfrecord')
    records.write_records(path, examples)
    assert os.listdir(tmp_path) == ['x.tfrecord']  # No temporary file left behind.
    back = records.read_records(path)
    for field in ('images', 'labels', 'ids', 'pseudo', 'confidence'):
        np.testing.assert_allclose(getattr(back, field), getattr(examples, field))

    with open(path, 'rb') as f:
        payload = f.read()
    with open(path, 'wb') as f:
        f.write(payload[: len(payload) - 30])
    with pytest.raises(records.DataError, match='x.tfrecord: corrupt'):
        records.read_records(path)
    with pytest.raises(records.DataError, match='missing.tfrecord: not found'):
        records.read_records(str(tmp_path / 'missing.tfrecord'))


_WRITE_SCRIPT = """
import sys
import numpy as np
from libml import records
examples = records.Records(
    np.arange(2 * 4 * 4 * 1, dtype=np.uint8).reshape(2, 4, 4, 1), np.array([0, 1]),
    np.array([7, 8]), np.array([0, 1]), np.array([1, 0.5], np.float32))
print('RESULT ' + repr(records.write_records(sys.argv[1], examples)['sha256']).replace("'", '"'))
"""


def test_the_same_records_are_written_as_the_same_bytes_in_any_process(tmp_path, monkeypatch):
    # Python's hash seed changes the order in which an Example's feature map is
    # serialized unless the writer sorts it.
    digests = set()
    for hash_seed in ('1', '2', '3'):
        monkeypatch.setenv('PYTHONHASHSEED', hash_seed)
        digests.add(fakes.run_python(_WRITE_SCRIPT, str(tmp_path / f'{hash_seed}.tfrecord')))
    assert len(digests) == 1


def test_writes_replace_a_planted_link_instead_of_following_it(tmp_path):
    victim = tmp_path / 'victim'
    victim.write_text('keep me')
    (tmp_path / 'args.json').symlink_to(victim)
    records.write_json(str(tmp_path / 'args.json'), {'a': 1})
    assert victim.read_text() == 'keep me'
    assert not (tmp_path / 'args.json').is_symlink()
    assert records.read_json(str(tmp_path / 'args.json')) == {'a': 1}
    assert sorted(os.listdir(tmp_path)) == ['args.json', 'victim']  # No temporary file left.


def test_temporary_files_left_by_a_crash_are_removed(tmp_path):
    (tmp_path / 'gen_00').mkdir()
    left = [tmp_path / 'results.json.tmp-x1y2', tmp_path / 'gen_00' / 'labeled.tfrecord.tmp-9']
    for path in left:
        path.write_text('')
    (tmp_path / 'gen_00' / 'picks.json').write_text('{}')
    # Another worker's copy of the run, beside ours on a shared disk, writing right now.
    (tmp_path / '.worker_1' / 'data').mkdir(parents=True)
    (tmp_path / '.worker_1' / 'data' / 'labeled.tfrecord.tmp-7').write_text('')
    removed = records.remove_temporary_files(str(tmp_path))
    assert sorted(removed) == sorted(str(p) for p in left)
    assert os.listdir(tmp_path / 'gen_00') == ['picks.json']
    assert os.listdir(tmp_path / '.worker_1' / 'data') == ['labeled.tfrecord.tmp-7']


def test_a_streamed_export_holds_the_originals_and_the_relabeled_picks(tmp_path):
    rng = np.random.default_rng(1)
    original = fakes.streamed_records(
        tmp_path,
        'labeled',
        rng.integers(0, 256, (6, 8, 8, 3), np.uint8),
        np.arange(6) % 2,
        np.arange(6),
    )
    pool = rng.integers(0, 256, (20, 8, 8, 3), np.uint8)
    unlabeled = fakes.streamed_records(
        tmp_path, 'unlabeled', pool, np.zeros(20, int), np.arange(6, 26)
    )
    picks = np.array([13, 2, 7, 19])  # As selected: grouped by class, not by position.
    labels, confidence = np.array([1, 0, 0, 1]), np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    path = str(tmp_path / 'export.tfrecord')
    written = records.export_streamed(path, original, unlabeled, picks, labels, confidence, seed=0)
    exported = records.read_records(path, written)
    assert written['records'] == 10
    pseudo = exported.pseudo == 1
    # The originals in their order, the picks in the unlabeled file's order.
    np.testing.assert_array_equal(exported.ids[~pseudo], original.ids)
    np.testing.assert_array_equal(exported.ids[pseudo], unlabeled.ids[[2, 7, 13, 19]])
    np.testing.assert_array_equal(exported.labels[pseudo], [0, 0, 1, 1])
    np.testing.assert_allclose(exported.confidence[pseudo], [0.8, 0.7, 0.9, 0.6])
    np.testing.assert_array_equal(exported.images[pseudo], pool[[2, 7, 13, 19]])
    # Mixed, in an order that follows the seed.
    assert np.flatnonzero(pseudo)[0] < np.flatnonzero(~pseudo)[-1]  # Not simply appended.
    orders = set()
    for seed in range(4):
        records.export_streamed(path, original, unlabeled, picks, labels, confidence, seed=seed)
        orders.add(tuple(records.read_records(path).pseudo))
    assert len(orders) > 1
