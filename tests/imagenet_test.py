"""ImageNet127: the class map's figures, and folds of a tiny fake ImageNet."""

import collections
import csv
import dataclasses
import os

import numpy as np
import pytest
from PIL import Image

from libml import datasets, folds, records
from libml.datasets import imagenet127 as imagenet
from libml.records import DataError


def map_rows():
    with open(imagenet.MAP_FILE, newline='') as f:
        return list(csv.DictReader(f, delimiter='\t'))


def test_the_map_gives_the_papers_imagenet127():
    rows = map_rows()
    wnids = [r['wnid'] for r in rows]
    assert len(rows) == 1000 and wnids == sorted(set(wnids))
    assert [int(r['ilsvrc_index']) for r in rows] == list(range(1000))
    classes = collections.Counter(r['group_wnid'] for r in rows)
    images = collections.Counter()
    for r in rows:
        images[r['group_wnid']] += int(r['train_images'])
    assert len(classes) == 127
    assert sum(images.values()) == 1_281_167
    assert (classes['n01861778'], images['n01861778']) == (218, 277_601)  # mammal
    assert (classes['n02605316'], images['n02605316']) == (1, 969)  # butterfly fish
    assert max(images.values()) / min(images.values()) == pytest.approx(286.48, abs=0.01)
    sizes = collections.Counter(classes.values())
    assert (sizes[1], sizes[2], sizes[3]) == (65, 20, 14)
    # Classes indexed by training images: mammal first, butterfly fish last.
    index, names = imagenet.read_map()
    assert names[0] == 'mammal' and names[-1] == 'butterfly fish' and len(names) == 127
    assert index['n02606052'] == 126  # rock beauty
    assert sorted(collections.Counter(index.values()).values())[-1] == 218


def write_fake_imagenet(root, per_class=1, skip=(), extra=()):
    """Every ILSVRC class folder with `per_class` tiny JPEGs (a gray one among them) in
    train/ and one in val/."""
    rng = np.random.default_rng(0)
    for n, row in enumerate(map_rows()):
        if row['wnid'] in skip:
            continue
        for split, count in (('train', per_class), ('val', 1)):
            folder = os.path.join(root, split, row['wnid'])
            os.makedirs(folder)
            for i in range(count):
                pixels = rng.integers(0, 256, (10, 14, 3), np.uint8)
                image = Image.fromarray(pixels)
                if n == 3 and split == 'train':
                    image = image.convert('L')
                image.save(os.path.join(folder, f'{row["wnid"]}_{i}.JPEG'), 'JPEG')
    for name in extra:
        os.makedirs(os.path.join(root, 'train', name))


def test_a_fold_of_a_fake_imagenet(tmp_path):
    write_fake_imagenet(tmp_path / 'imagenet', per_class=2)
    out = str(tmp_path / 'fold')
    logs = []
    imagenet127 = datasets.get('imagenet127')
    spec = folds.FoldSpec(data_dir=str(tmp_path / 'imagenet'), image_size=32)
    summary = folds.ensure_fold(imagenet127, spec, out, logs.append)
    _, names = imagenet.read_map()
    assert summary['class_names'] == names == list(imagenet127.class_names)
    assert summary['image_shape'] == [32, 32, 3]
    assert summary['longtail'][0] == 2 * 218 and summary['longtail'][-1] == 2
    # ceil(10% of each class) labeled; all validation images are the test set.
    longtail = np.array(summary['longtail'])
    np.testing.assert_array_equal(summary['labeled'], np.ceil(0.1 * longtail).astype(int))
    assert sum(summary['labeled']) + sum(summary['unlabeled']) == 2000
    assert sum(summary['test']) == 1000
    paths = records.read_json(os.path.join(out, folds.PATHS_FILE))
    labeled = folds.read_split(out, 'labeled', summary)
    assert labeled.images.shape[1:] == (32, 32, 3)  # The gray JPEG too.
    index, _ = imagenet.read_map()
    for id_, label in zip(labeled.ids, labeled.labels, strict=True):
        assert index[paths['train'][id_].split('/')[1]] == label
    # Another fold, the same images in other splits; the same fold, the same files.
    again = folds.create_fold(imagenet127, spec, str(tmp_path / 'again'), lambda m: None)
    assert again['files'] == summary['files']
    with pytest.raises(DataError, match='holds another fold'):
        folds.ensure_fold(imagenet127, dataclasses.replace(spec, fold=2), out)


def test_fake_imagenet_errors(tmp_path):
    write_fake_imagenet(tmp_path / 'a', skip={'n01440764'}, extra=['n99999999'])
    with pytest.raises(
        DataError,
        match=r'1 ILSVRC class folder\(s\) missing, e.g. n01440764; '
        r'1 folder\(s\) not ILSVRC-2012 classes, e.g. n99999999',
    ):
        imagenet.write_fold(str(tmp_path / 'a'), 0.1, 1, 32, 'stop', str(tmp_path / 'o'), print)
    write_fake_imagenet(tmp_path / 'b')
    bad = tmp_path / 'b' / 'val' / 'n01440764' / 'broken.JPEG'
    bad.write_bytes(b'\xff\xd8 not a JPEG')
    with pytest.raises(DataError, match=r'val/n01440764/broken.JPEG: not a readable image'):
        imagenet.write_fold(str(tmp_path / 'b'), 0.1, 1, 32, 'stop', str(tmp_path / 'o'), print)
    logs = []
    entries = imagenet.write_fold(
        str(tmp_path / 'b'), 0.1, 1, 32, 'skip', str(tmp_path / 'o2'), logs.append
    )
    assert entries['skipped'] == ['val/n01440764/broken.JPEG']
    assert sum(entries['test']) == 1000 and entries['files']['test.tfrecord']['records'] == 1000


def test_imagenet127_runs_end_to_end_streamed(tmp_path):
    """Two generations on the fake ImageNet as a real one runs: images streamed; the
    second generation trains on the original labeled ids plus the first one's picks."""
    from crest import config as config_lib
    from crest import loop

    write_fake_imagenet(tmp_path / 'imagenet')
    cfg = config_lib.Config(
        workdir=str(tmp_path / 'run'),
        dataset='imagenet127',
        data_dir=str(tmp_path / 'imagenet'),
        image_size=32,
        arch='cnn_small',
        generations=2,
        alpha=0.7,
        steps_per_generation=2,
        eval_every=2,
        batch_size=8,
        uratio=1,
        stream='always',
    )
    logs = []
    results = loop.run(cfg, log=logs.append)
    assert any('imagenet127 (fold 1, its own long tail; --imbalance unused)' in m for m in logs)
    assert any('images streamed from' in m for m in logs)
    fold = os.path.join(cfg.workdir, 'data')
    summary = records.read_json(os.path.join(fold, folds.COUNTS_FILE))
    original = folds.read_split(fold, 'labeled', summary)
    unlabeled = folds.read_split(fold, 'unlabeled', summary)
    exported = records.read_records(os.path.join(cfg.workdir, 'gen_00', 'labeled.tfrecord'))
    pseudo = exported.pseudo == 1
    np.testing.assert_array_equal(exported.ids[~pseudo], original.ids)
    assert set(exported.ids[pseudo]) <= set(unlabeled.ids)
    assert pseudo.sum() == results.generations[0].picks.total_picked
    assert results.generations[1].labeled_size == len(exported)
    assert len(results.generations[1].test.recall) == 127
