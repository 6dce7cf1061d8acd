"""The user's own data: image folders and .npz files, on data the tests write."""

import os

import numpy as np
import pytest
from PIL import Image

from libml import datasets, folds, machine, records
from libml.datasets.folder import load_folder
from libml.datasets.npz import load_npz
from libml.records import DataError


def image(seed, size=(12, 12), channels=3):
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, channels), np.uint8)
    return pixels[..., 0] if channels == 1 else pixels


def save(root, path, pixels, fmt='PNG'):
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    Image.fromarray(pixels).save(full, fmt)


# Labeled counts: 'zebra' 3, 'ant' 1, 'moth' 2: ranked zebra, moth, ant (never by name).
LAYOUT = {
    'labeled/zebra': 3,
    'labeled/ant': 1,
    'labeled/moth': 2,
    'unlabeled/zebra': 2,  # Labels used to report the picks' precision only.
    'unlabeled/misc/deeper': 1,  # Not a class name: class unknown.
    'unlabeled': 2,  # Directly in unlabeled/: class unknown.
    'test/zebra': 1,
    'test/ant': 2,
    'test/moth': 1,
}


def write_folder(root, order=None, size=(12, 12)):
    """The LAYOUT as PNG files, each image's pixels a function of its path; `order`
    permutes the order the files are created in."""
    paths = [f'{folder}/{i}.png' for folder, n in LAYOUT.items() for i in range(n)]
    for path in paths if order is None else [paths[i] for i in order]:
        save(root, path, image(sum(map(ord, path)), size))
    return sorted(paths)


def test_folder_counts_ranks_labels_and_ids(tmp_path):
    paths = write_folder(tmp_path)
    logs = []
    given = load_folder(str(tmp_path), log=logs.append)
    assert given.class_names == ('zebra', 'moth', 'ant')  # By labeled count.
    assert given.labels['labeled'].tolist() == [2, 1, 1, 0, 0, 0]  # ant, moth x2, zebra x3.
    # Unlabeled: the two files directly in unlabeled/, misc/deeper, then zebra/.
    assert given.labels['unlabeled'].tolist() == [-1, -1, -1, 0, 0]
    assert given.labels['test'].tolist() == [2, 2, 1, 0]
    # Ids: positions in the sorted list of train files, labeled ones first.
    train = given.paths['train']
    assert train == [p for p in paths if not p.startswith('test/')]
    assert given.ids['labeled'].tolist() == list(range(6))
    assert [train[i] for i in given.ids['unlabeled']] == [
        'unlabeled/0.png',
        'unlabeled/1.png',
        'unlabeled/misc/deeper/0.png',
        'unlabeled/zebra/0.png',
        'unlabeled/zebra/1.png',
    ]
    assert given.paths['test'] == [p for p in paths if p.startswith('test/')]
    # Pixels are the file's own, unchanged at the median size.
    first = np.asarray(Image.open(tmp_path / train[given.ids['unlabeled'][3]]))
    np.testing.assert_array_equal(given.images['unlabeled'][3], first)
    assert any('resized to 12x12 (the median side' in m for m in logs)


def test_folder_ids_do_not_depend_on_the_listing_order(tmp_path, monkeypatch):
    a, b = tmp_path / 'a', tmp_path / 'b'
    n = sum(LAYOUT.values())
    write_folder(a)
    write_folder(b, order=np.random.default_rng(0).permutation(n))
    walk = os.walk

    def reversed_walk(top, **kwargs):  # A file system that lists in another order.
        for folder, subfolders, files in walk(top, **kwargs):
            subfolders.reverse()
            yield folder, subfolders, files[::-1]

    first = load_folder(str(a), log=lambda m: None)
    monkeypatch.setattr(os, 'walk', reversed_walk)
    second = load_folder(str(b), log=lambda m: None)
    assert first.paths == second.paths
    for split in first.images:
        np.testing.assert_array_equal(first.ids[split], second.ids[split])
        np.testing.assert_array_equal(first.labels[split], second.labels[split])
        np.testing.assert_array_equal(first.images[split], second.images[split])


def test_folder_sizes_formats_and_val(tmp_path):
    # Mixed sizes and formats (PNG, JPEG, BMP, GIF).
    save(tmp_path, 'labeled/a/0.png', image(0, (10, 16)))
    save(tmp_path, 'labeled/a/1.jpg', image(1, (16, 16)), 'JPEG')
    save(tmp_path, 'labeled/b/0.bmp', image(2, (20, 30)), 'BMP')
    save(tmp_path, 'unlabeled/0.gif', image(3, (16, 20)), 'GIF')
    save(tmp_path, 'test/a/0.png', image(4, (16, 16)))
    save(tmp_path, 'test/b/0.png', image(6, (16, 16)))
    save(tmp_path, 'val/b/0.png', image(5, (16, 16)))
    (tmp_path / 'labeled' / 'a' / 'notes.txt').write_text('not an image')
    logs = []
    given = load_folder(str(tmp_path), log=logs.append)
    # Sides 10, 16 | 16, 16 | 20, 30 | 16, 20 | 16, 16 (x2) | 16, 16: the median is 16.
    assert {x.shape for x in given.images.values()} == {
        (3, 16, 16, 3),
        (2, 16, 16, 3),
        (1, 16, 16, 3),
    }
    assert any('sides found 10..30 px' in m for m in logs)
    assert given.labels['val'].tolist() == [1]
    assert given.paths['val'] == ['val/b/0.png']
    assert any('1 file(s) not in' in m and 'notes.txt' in m for m in logs)
    resized = load_folder(str(tmp_path), image_size=8, log=logs.append)
    assert resized.images['labeled'].shape == (3, 8, 8, 3)
    assert any('resized to 8x8 (--image_size)' in m for m in logs)


def test_folder_errors_name_the_problem(tmp_path):
    def folder(name, files):
        root = tmp_path / name
        for path, pixels in files.items():
            save(root, path, pixels)
        for path in ('labeled', 'unlabeled', 'test'):
            os.makedirs(root / path, exist_ok=True)
        return str(root)

    ok = {'labeled/a/0.png': image(0), 'unlabeled/0.png': image(1), 'test/a/0.png': image(2)}

    root = folder('empty_class', ok)
    os.makedirs(os.path.join(root, 'labeled', 'b'))
    with pytest.raises(DataError, match=r'class folder\(s\) without images: b'):
        load_folder(root)
    root = folder('unknown_test_class', {**ok, 'test/c/0.png': image(3)})
    with pytest.raises(DataError, match=r"test/c/0.png: class 'c' has no labeled images"):
        load_folder(root)
    root = folder('flat_labeled', {**ok, 'labeled/0.png': image(3)})
    with pytest.raises(DataError, match=r'labeled/0.png: labeled images go in labeled/<class>/'):
        load_folder(root)
    root = folder('mixed', {**ok, 'unlabeled/1.png': image(3, channels=1)})
    with pytest.raises(DataError, match=r'different channel counts: 1 \(e.g. .*unlabeled/1.png'):
        load_folder(root)
    root = folder('rgba', {k: image(i, channels=4) for i, k in enumerate(ok)})
    with pytest.raises(DataError, match='4 channels'):
        load_folder(root)
    root = folder('no_test', {k: v for k, v in ok.items() if not k.startswith('test')})
    with pytest.raises(DataError, match=r'test: no images'):
        load_folder(root)
    with pytest.raises(DataError, match='unlabeled: no images'):
        load_folder(folder('empty_unlabeled', {'labeled/a/0.png': image(0)}))
    save(tmp_path, 'no_unlabeled/labeled/a/0.png', image(0))
    with pytest.raises(DataError, match='no_unlabeled/unlabeled: not found'):
        load_folder(str(tmp_path / 'no_unlabeled'))

    # An unreadable image: named; 'stop' (default) stops, 'skip' leaves it out.
    root = folder('bad', {**ok, 'unlabeled/1.png': image(3)})
    with open(os.path.join(root, 'unlabeled', '2.png'), 'wb') as f:
        f.write(b'\x89PNG not really')
    with pytest.raises(DataError, match=r'unlabeled/2.png: not a readable image.*bad_images=skip'):
        load_folder(root)
    logs = []
    given = load_folder(root, bad_images='skip', log=logs.append)
    assert given.skipped == ('unlabeled/2.png',)
    assert any('skipped' in m and 'unlabeled/2.png' in m for m in logs)
    # The skipped file keeps its place in the id list: fixing it changes no other id.
    assert given.paths['train'] == [
        'labeled/a/0.png',
        'unlabeled/0.png',
        'unlabeled/1.png',
        'unlabeled/2.png',
    ]
    assert given.ids['unlabeled'].tolist() == [1, 2]


def write_npz(path, **overrides):
    rng = np.random.default_rng(0)
    arrays = dict(
        x_labeled=rng.integers(0, 256, (6, 9, 9), np.uint8),
        # Original classes 0 'cat' 1, 1 'dog' 3, 2 'eel' 2: ranked dog, eel, cat.
        y_labeled=np.array([1, 0, 1, 2, 1, 2]),
        x_unlabeled=rng.integers(0, 256, (4, 9, 9), np.uint8),
        x_test=rng.integers(0, 256, (3, 9, 9), np.uint8),
        y_test=np.array([0, 1, 2]),
        class_names=np.array(['cat', 'dog', 'eel']),
    )
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def test_npz_ranks_classes_and_numbers_ids(tmp_path):
    path = str(tmp_path / 'd.npz')
    arrays = write_npz(path, y_unlabeled=np.array([2, -1, 0, 1]))
    given = load_npz(path)
    assert given.class_names == ('dog', 'eel', 'cat')
    assert given.labels['labeled'].tolist() == [0, 2, 0, 1, 0, 1]
    assert given.labels['unlabeled'].tolist() == [1, -1, 2, 0]
    assert given.labels['test'].tolist() == [2, 0, 1]
    assert given.ids['labeled'].tolist() == list(range(6))
    assert given.ids['unlabeled'].tolist() == [6, 7, 8, 9]  # One id space with labeled.
    np.testing.assert_array_equal(given.images['unlabeled'][..., 0], arrays['x_unlabeled'])
    without = write_npz(str(tmp_path / 'e.npz'), class_names=None)
    assert 'class_names' in without
    assert load_npz(str(tmp_path / 'e.npz')).class_names == (
        'class_1',
        'class_2',
        'class_0',
    )
    assert load_npz(str(tmp_path / 'e.npz')).labels['unlabeled'].tolist() == [-1] * 4
    resized = load_npz(path, image_size=12, log=lambda m: None)
    assert resized.images['test'].shape == (3, 12, 12, 1)


@pytest.mark.parametrize(
    'overrides, message',
    [
        (dict(class_names=np.array(['cat', 'dog', 'eel'], object)), 'class_names holds Python'),
        (dict(x_test=None), 'missing array.*x_test'),
        (dict(x_unlabelled=np.zeros((1, 9, 9), np.uint8)), 'unknown array.*x_unlabelled'),
        (dict(x_labeled=np.zeros((6, 9, 9), np.float32)), 'x_labeled is float32.*uint8'),
        (dict(y_test=np.array([0, 1, 3])), r'labels go up to 3'),
        (
            dict(y_test=np.array([0, 1, 2]), y_labeled=np.array([1, 1, 1, 2, 1, 2])),
            "y_test holds class 'cat', which has no labeled image",
        ),
        (dict(class_names=np.array(['cat', 'dog', 'eel', 'fox'])), r'without labeled images: fox'),
        (dict(x_test=np.zeros((3, 9, 8), np.uint8)), r'pass --image_size'),
        (dict(x_test=np.zeros((3, 9, 9, 3), np.uint8)), r'different channel counts'),
        (dict(y_labeled=np.array([1, 0, 1])), r'y_labeled is int64 \(3,\)'),
    ],
)
def test_npz_errors(tmp_path, overrides, message):
    path = str(tmp_path / 'd.npz')
    write_npz(path, **overrides)
    with pytest.raises(DataError, match=message):
        load_npz(path)


def ensure(out, data_dir, log=print, **settings):
    spec = folds.FoldSpec(data_dir=data_dir, **settings)
    return folds.ensure_fold(datasets.get('folder'), spec, out, log=log)


def test_a_folder_fold_records_paths_and_its_source(tmp_path):
    src = tmp_path / 'images'
    write_folder(src)
    out = str(tmp_path / 'fold')
    summary = ensure(out, str(src), log=lambda m: None)
    assert summary['data_dir'] == str(src) and summary['image_size'] == 0
    assert summary['class_names'] == ['zebra', 'moth', 'ant']
    assert summary['labeled'] == [3, 2, 1] and summary['unlabeled'] == [2, 0, 0]
    assert summary['unknown_labels'] == {'labeled': 0, 'unlabeled': 3, 'test': 0}
    paths = records.read_json(os.path.join(out, folds.PATHS_FILE))
    unlabeled = folds.read_split(out, 'unlabeled', summary)
    # Stored in a fixed random order; each record is its file's image, with its label.
    assert sorted(paths['train'][i] for i in unlabeled.ids) == paths['train'][6:]
    given = load_folder(str(src), log=lambda m: None)
    order = np.argsort(unlabeled.ids)
    np.testing.assert_array_equal(unlabeled.images[order], given.images['unlabeled'])
    np.testing.assert_array_equal(unlabeled.labels[order], given.labels['unlabeled'])
    assert not np.array_equal(unlabeled.ids, np.sort(unlabeled.ids))
    # Reused as it is; another folder or size is refused.
    assert ensure(out, str(src), imbalance=5, label_fraction=0.5) == summary
    with pytest.raises(DataError, match='holds another fold'):
        ensure(out, str(tmp_path / 'other'))
    with pytest.raises(DataError, match='holds another fold'):
        ensure(out, str(src), image_size=8)


def test_a_file_that_is_not_an_npz_archive_is_a_one_line_error(tmp_path):
    """A .npy renamed .npz, text, a zip header over garbage, an archive cut short."""
    np.save(tmp_path / 'array.npy', np.zeros(3))
    os.rename(tmp_path / 'array.npy', tmp_path / 'array.npz')
    (tmp_path / 'text.npz').write_text('x_labeled,y_labeled\n')
    (tmp_path / 'garbage.npz').write_bytes(b'PK\x03\x04' + b'\xff' * 100)
    write_npz(str(tmp_path / 'whole.npz'))
    whole = (tmp_path / 'whole.npz').read_bytes()
    (tmp_path / 'cut.npz').write_bytes(whole[: len(whole) // 2])
    for name, message in [
        ('array', 'a single array (.npy), not an .npz file of named arrays'),
        ('text', 'not an .npz file (not a zip archive; np.savez writes one)'),
        ('garbage', 'not a readable .npz file (File is not a zip file)'),
        ('cut', 'not a readable .npz file'),
    ]:
        path = str(tmp_path / f'{name}.npz')
        with pytest.raises(DataError) as e:
            load_npz(path)
        assert str(e.value).startswith(f'{path}: {message}'), str(e.value)
        assert '\n' not in str(e.value)


def test_folder_inconsistencies_are_refused_naming_the_files(tmp_path):
    ok = {
        'labeled/a/0.png': image(0),
        'labeled/b/0.png': image(1),
        'unlabeled/0.png': image(2),
        'test/a/0.png': image(3),
        'test/b/0.png': image(4),
    }

    def folder(name, files):
        root = tmp_path / name
        for path, pixels in files.items():
            save(root, path, pixels)
        return str(root)

    # Test images of one class only.
    root = folder('one_test_class', {k: v for k, v in ok.items() if k != 'test/b/0.png'})
    with pytest.raises(DataError, match=r'one_test_class/test: images of one class only \(a\)'):
        load_folder(root)
    # A test image that is also a train image (same bytes, another name).
    root = folder('twins', {**ok, 'unlabeled/copy.png': image(4)})
    with pytest.raises(DataError) as e:
        load_folder(root)
    assert str(e.value) == (
        f'{root}/test/b/0.png and {root}/unlabeled/copy.png: the same image (same bytes) in '
        'test/ and in the train images; remove one'
    )
    # Every labeled image of a class unreadable, and skipped: the class and its files.
    root = folder('lost_class', {**ok, 'labeled/b/1.png': image(5)})
    for name in ('0.png', '1.png'):
        with open(os.path.join(root, 'labeled', 'b', name), 'wb') as f:
            f.write(b'\x89PNG not really')
    with pytest.raises(DataError) as e:
        load_folder(root, bad_images='skip', log=lambda m: None)
    assert str(e.value) == (
        f"{root}/labeled/b: every labeled image of class 'b' was skipped as unreadable "
        '(labeled/b/0.png, labeled/b/1.png); replace them or remove the class'
    )


def test_folder_links_to_folders_read_elsewhere_are_not_followed(tmp_path):
    """A link from unlabeled/ to the data folder itself (a loop), to an unlabeled folder
    already read and to another split: each image is read once, in its own split."""
    root = tmp_path / 'linked'
    write_folder(str(root))
    os.symlink(root, root / 'unlabeled' / 'loop')
    os.symlink(root / 'unlabeled' / 'misc', root / 'unlabeled' / 'misc_again')
    os.symlink(root / 'test' / 'ant', root / 'unlabeled' / 'ants')
    os.makedirs(tmp_path / 'elsewhere')
    save(tmp_path, 'elsewhere/1.png', image(99))
    os.symlink(tmp_path / 'elsewhere', root / 'unlabeled' / 'more')
    logs = []
    given = load_folder(str(root), log=logs.append)
    assert len(given.images['unlabeled']) == 5 + 1  # LAYOUT's 5, and the one linked in.
    assert 'unlabeled/more/1.png' in given.paths['train']
    skipped = [m for m in logs if 'not followed' in m]
    assert len(skipped) == 3, logs
    assert any(f'{root}/unlabeled/loop: a link to {root}, read elsewhere' in m for m in skipped)


@pytest.mark.parametrize(
    'overrides, message',
    [
        (
            dict(y_labeled=np.array([1, 0, 1, 2, 1, 2**40])),
            r'y_labeled holds label 1099511627776, ',
        ),
        (dict(y_test=np.array([0, 1, 2**62])), r'y_test holds label 4611686018427387904, out of'),
        (dict(y_test=np.array([1, 1, 1])), r'y_test holds one class only \(1\)'),
        (dict(class_names=np.array(['cat', 'dog', 'cat'])), r"class_names repeats 'cat'"),
    ],
)
def test_npz_inconsistent_arrays(tmp_path, overrides, message):
    path = str(tmp_path / 'd.npz')
    write_npz(path, **overrides)
    with pytest.raises(DataError, match=message):
        load_npz(path)


def test_a_folder_given_as_npz_file_is_named(tmp_path):
    with pytest.raises(DataError, match='a folder, not an .npz file'):
        load_npz(str(tmp_path))


def test_a_fold_that_cannot_fit_in_memory_is_refused_before_it_is_read(tmp_path, monkeypatch):
    write_folder(str(tmp_path))
    monkeypatch.setattr(machine, 'available_memory', lambda: 100_000)
    # 15 images at 64 px: 2 x 15 x 64 x 64 x 3 = 368,640 bytes.
    with pytest.raises(DataError) as e:
        load_folder(str(tmp_path), image_size=64)
    assert str(e.value) == (
        f'{tmp_path}: the fold of 15 images at 64 px needs about 0.0 GiB of memory, and 0.0 '
        'GiB is available: lower --image_size'
    )
    assert load_folder(str(tmp_path), image_size=16, log=lambda m: None).images  # 23,040 bytes.
    path = str(tmp_path / 'd.npz')
    write_npz(path)
    with pytest.raises(DataError, match=r'd.npz: 13 images resized to 64 px needs about'):
        load_npz(path, image_size=64)
