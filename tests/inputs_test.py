"""Every bad input a one-line error: a table of cases run through the driver
(scripts/crest.py, in this process), each with the message it must give, and nothing
left behind that a later run would trust (no args.json, no fold marked complete)."""

import errno
import gzip
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from crest.results import Results
from libml import datasets, machine, records
from libml.datasets import cifar
from tests import fakes


@pytest.fixture(scope='module')
def cli():
    """scripts/crest.py loaded once (its flags can be defined only once per process)."""
    return fakes.load_script('scripts/crest.py', 'crest_cli')


def _error(cli, *argv) -> str | None:
    """The message the driver exits with for these flags, or None if it ran through."""
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['crest.py', '--nodeterministic', *argv])
    try:
        cli.main(['crest.py'])
    except SystemExit as e:
        return str(e.code)
    return None


# (flags, the start of the message). Each runs with its own --workdir.
FLAG_CASES = [
    (['--lr=inf'], '--lr must be a finite number, got inf'),
    (['--lr=nan'], '--lr must be a finite number, got nan'),
    (['--lr=0'], '--lr must be > 0'),
    (
        ['--dataset=cifar10_darp', '--fold=2'],
        '--fold must be 1 for cifar10_darp: its split is fixed, runs differ by --seed, got 2',
    ),
    (['--fixmatch.wu=nan'], '--fixmatch.wu must be a finite number, got nan'),
    (['--fixmatch.wu=-1'], '--fixmatch.wu must be >= 0, got -1.0'),
    (['--fixmatch.threshold=1.5'], '--fixmatch.threshold must be in [0, 1]'),
    (['--wd=-1'], '--wd must be >= 0'),
    (['--wd=inf'], '--wd must be a finite number'),
    (['--ema_decay=1'], '--ema_decay must be in [0, 1)'),
    (['--lr_decay_level=9'], '--lr_decay_level must be in [0, 8]'),
    (['--lr_decay_level=nan'], '--lr_decay_level must be a finite number'),
    (['--seed=5000000'], '--seed must be in [0, 4000000], got 5000000'),
    (['--seed=-1'], '--seed must be in [0, 4000000]'),
    (['--imbalance=10000'], '--imbalance must be in [1, 5000] for cifar10lt'),
    (['--imbalance=0.5'], '--imbalance must be in [1, 5000]'),
    (['--imbalance=inf'], '--imbalance must be a finite number'),
    (['--label_fraction=1'], '--label_fraction must be in (0, 1) (1 would leave no unlabeled'),
    (['--label_fraction=0'], '--label_fraction must be in (0, 1)'),
    (['--alpha=-1'], '--alpha must be >= 0'),
    (['--alpha=nan'], '--alpha must be a finite number'),
    (['--t_min=1.5'], '--t_min must be in [0, 1]'),
    (['--fold=0'], '--fold must be >= 1, got 0'),
    (['--generations=0'], '--generations must be in [1, 100], got 0'),
    (['--generations=101'], '--generations must be in [1, 100], got 101'),
    (['--steps_per_generation=0'], '--steps_per_generation must be in [1, 10000000]'),
    (['--steps_per_generation=10000001'], '--steps_per_generation must be in [1, 10000000]'),
    (['--eval_every=0'], '--eval_every must be in [1, 10000000]'),
    (['--batch_size=0'], '--batch_size must be in [1, 65536]'),
    (['--batch_size=100000'], '--batch_size must be in [1, 65536], got 100000'),
    (['--uratio=0'], '--uratio must be in [1, 64]'),
    (['--uratio=1000'], '--uratio must be in [1, 64], got 1000'),
    (['--cb_beta=1'], '--cb_beta must be in [0, 1)'),
    (['--dataset=mnist'], '--dataset must be one of'),
    (['--arch=resnet'], '--arch must be one of'),
    (['--precision=fp16'], "--precision must be one of ['float32', 'bf16'], got 'fp16'"),
    (['--algorithm=mixmatch', '--mixmatch.T=0'], '--mixmatch.T must be > 0'),
    (['--algorithm=mixmatch', '--mixmatch.K=0'], '--mixmatch.K must be an integer in [1, 64]'),
    (['--algorithm=mixmatch', '--mixmatch.K=2000'], '--mixmatch.K must be an integer in [1, 64]'),
    (
        ['--dataset=folder', '--data_dir=/', '--image_size=20000'],
        '--image_size must be in [0, 1024], got 20000',
    ),
    (['--fold=1001'], '--fold must be in [1, 1000], got 1001'),
    (['--class_order=4294967296'], '--class_order must be in [0, 4294967295], got 4294967296'),
    (['--algorithm=mixmatch', '--fixmatch.threshold=0.9'], '--fixmatch.threshold applies to'),
    (['--method=nope'], '--method must be one of'),
    (['--method=mixmatch', '--mixmatch.T=0'], '--mixmatch.T must be > 0'),
    (['--method=fixmatch_da05', '--t_min=2'], '--t_min must be in [0, 1], got 2.0'),
    (['--total_steps=100'], '--total_steps applies with --method only'),
    (['--preset=nope'], '--preset must be one of'),
    (
        ['--preset=imagenet127'],
        '--data_dir must be set for --dataset=imagenet127, got None (--dataset=imagenet127, set '
        'by --preset=imagenet127)',
    ),
    (['--dataset=folder'], '--data_dir must be set for --dataset=folder'),
    (['--dataset=folder', '--data_dir=/no/such'], '--data_dir must be an existing folder or'),
    (['--dataset=npz', '--data_dir=/no/such.npz'], '--data_dir must be an existing folder or'),
    (['--image_size=64'], '--image_size must be 0 for cifar10lt'),
    (['--class_order=abc'], '--class_order must be a seed (an integer) or class indices'),
    (['--class_order=-1'], '--class_order must be in [0, 4294967295], got -1'),
    (['--class_order=6,4,2,0,9,1,3,5,7'], '--class_order must be a permutation of 0..9 (missing'),
    (['--class_order=6,4,2,0,9,1,3,5,7,7'], '--class_order must be a permutation of 0..9 (repea'),
    (['--class_order=6,4,2,0,9,1,3,5,7,10'], '--class_order must be a permutation of 0..9 (out'),
    (['--dataset=npz', '--data_dir=/', '--class_order=1,0'], '--class_order must be 0 for npz'),
    (
        ['--label_fraction=0.9999'],
        '--label_fraction must be <= 0.9998 for cifar10lt at --imbalance=100 (above, ceil(beta',
    ),
    (
        ['--label_fraction=0.0001'],
        '--label_fraction must be > 0.0002 for cifar10lt at --imbalance=100 (below, ceil(beta '
        '* N_l) labels 1 image of every class: the labeled set loses the long tail)',
    ),
    (
        ['--method=fixmatch_crest', '--total_steps=3'],
        '--total_steps must be in [6, 39,321,600] with --method=fixmatch_crest (at least one',
    ),
    (['--method=fixmatch_crest', '--total_steps=-5'], '--total_steps must be in [6, 39,321,600]'),
    (['--method=mixmatch', '--total_steps=0'], '--total_steps must be in [1, 10,000,000]'),
    (['--method=fixmatch', '--total_steps=20000000'], '--total_steps must be in [1, 10,000,000]'),
    (
        ['--preset=imagenet127', '--dataset=cifar10lt'],
        '--image_size must be 0 for cifar10lt (its images keep their size), got 224 (set by '
        '--preset=imagenet127; a flag given explicitly wins)',
    ),
]


@pytest.mark.parametrize(
    'argv,message', FLAG_CASES, ids=lambda v: ' '.join(v) if isinstance(v, list) else ''
)
def test_bad_flag(cli, argv, message, tmp_path):
    error = _error(cli, *argv, f'--workdir={tmp_path / "run"}')
    assert error is not None and error.startswith(f'error: {message}'), error
    assert '\n' not in error
    assert not (tmp_path / 'run').exists()  # Refused before any work.


def test_class_order_flag_gives_a_seed_or_a_list(cli):
    for argv, value in (([], 0), (['--class_order=2'], 2), (['--class_order=2,0,1'], [2, 0, 1])):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(['crest.py', *argv])
        cfg = cli._config()
        assert cfg.class_order == value and type(cfg.class_order) is type(value)
    flags.FLAGS.unparse_flags()


# Run folders that cannot be written.
def test_a_preset_sets_the_paper_setting_and_explicit_flags_win(cli):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['crest.py', '--preset=imagenet127', '--generations=1', '--fixmatch.wu=1'])
    cfg = cli._config()
    assert (cfg.dataset, cfg.arch, cfg.image_size, cfg.preset) == (
        'imagenet127',
        'resnet50',
        224,
        'imagenet127',
    )
    assert (cfg.batch_size, cfg.uratio, cfg.lr, cfg.alpha, cfg.t_min) == (1024, 5, 0.4, 0.7, 0.5)
    assert cfg.generations == 1 and cfg.hparams == {'threshold': 0.7, 'wu': 1.0}
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['crest.py', '--preset=imagenet127', '--algorithm=mixmatch'])
    assert cli._config().hparams == {}  # FixMatch's settings do not go to MixMatch.
    flags.FLAGS.unparse_flags()


def _file(tmp_path):
    (tmp_path / 'file').write_text('')
    return str(tmp_path / 'file')


WORKDIR_CASES = [
    (_file, 'exists and is not a folder'),
    (lambda tmp_path: _file(tmp_path) + '/run', 'cannot write there'),
    (lambda tmp_path: '/proc/crest-run', 'cannot write there'),
]


@pytest.mark.parametrize('workdir,message', WORKDIR_CASES)
def test_unwritable_workdir(cli, workdir, message, tmp_path):
    error = _error(cli, f'--workdir={workdir(tmp_path)}')
    assert error is not None and message in error and error.startswith('error: --workdir'), error


# Broken source files, read through the real loaders.
def _fashion(tmp_path, broken: str):
    src = tmp_path / 'src'
    fakes.write_fashion_mnist(str(src), 1, 1)
    images = src / 'train-images-idx3-ubyte.gz'
    if broken == 'missing':
        os.remove(images)
    elif broken == 'deflate':  # A gzip header, then a corrupt deflate stream.
        images.write_bytes(gzip.compress(b'\0' * 1000)[:20] + b'\xff' * 200)
    elif broken == 'header_only':
        images.write_bytes(gzip.compress(b'\0\0\x08\x03' + (60000).to_bytes(4, 'big') * 3))
    elif broken == 'header_cut':
        images.write_bytes(gzip.compress(b'\0\0\x08\x03\0\0'))
    elif broken == 'magic':
        images.write_bytes(gzip.compress(b'PK\x03\x04 not idx'))
    return ['--dataset=fashion_mnist_lt', f'--data_dir={src}']


def _cifar(tmp_path, broken: str):
    src = tmp_path / 'src'
    src.mkdir()
    if broken == 'archive':
        (src / 'cifar-10-binary.tar.gz').write_bytes(b'\x1f\x8b\x08 not a tar.gz')
    elif broken == 'batch_length':  # Extracted files; the third train batch one byte short.
        for b in range(1, 6):
            payload = fakes.cifar_records([0, 1])
            (src / f'data_batch_{b}.bin').write_bytes(payload[:-1] if b == 3 else payload)
        (src / 'test_batch.bin').write_bytes(fakes.cifar_records([0]))
        (src / 'batches.meta.txt').write_text('a\nb\n')
    return ['--dataset=cifar10lt', f'--data_dir={src}']


def _fashion_labels(tmp_path, broken: str):
    src = tmp_path / 'src'
    (_, y_train), (_, y_test) = fakes.write_fashion_mnist(str(src), 1, 1)
    if broken == 'out_of_range':
        y_train[3] = 200
        fakes.write_idx(str(src / 'train-labels-idx1-ubyte.gz'), y_train)
    elif broken == 'one_test_class':
        fakes.write_idx(str(src / 't10k-labels-idx1-ubyte'), np.zeros_like(y_test))
    elif broken == 'endless':  # A link to a device that never ends.
        os.remove(src / 't10k-images-idx3-ubyte')
        os.symlink('/dev/zero', src / 't10k-images-idx3-ubyte')
    elif broken == 'longer':
        with open(src / 't10k-images-idx3-ubyte', 'ab') as f:
            f.write(b'\0')
    elif broken == 'huge_header':
        (src / 't10k-images-idx3-ubyte').write_bytes(b'\0\0\x08\x03' + b'\xff' * 12)
    elif broken == 'file':
        return ['--dataset=fashion_mnist_lt', f'--data_dir={src / "t10k-images-idx3-ubyte"}']
    return ['--dataset=fashion_mnist_lt', f'--data_dir={src}']


def _cifar_endless(tmp_path, broken: str):
    src = tmp_path / 'src'
    src.mkdir()
    os.symlink('/dev/zero', src / 'data_batch_1.bin')
    return ['--dataset=cifar10lt', f'--data_dir={src}']


DATA_CASES = [
    (_fashion_labels, 'out_of_range', 'train-labels-idx1-ubyte.gz: label 200 out of range'),
    (_fashion_labels, 'one_test_class', 't10k-labels-idx1-ubyte: test labels of one class'),
    (_fashion_labels, 'endless', 't10k-images-idx3-ubyte: not an IDX file of unsigned bytes'),
    (_fashion_labels, 'longer', 't10k-images-idx3-ubyte: longer than its header says'),
    (_fashion_labels, 'huge_header', 'over the 1,073,741,824 this reader takes'),
    (_fashion_labels, 'file', 't10k-images-idx3-ubyte: a file, not a folder'),
    (_cifar_endless, 'endless', 'data_batch_1.bin: over 1,000 bytes, not a CIFAR binary file'),
    (_fashion, 'missing', 'train-images-idx3-ubyte[.gz]: not found'),
    (_fashion, 'deflate', 'train-images-idx3-ubyte.gz: cannot read'),
    (_fashion, 'header_only', 'train-images-idx3-ubyte.gz: header says'),
    (_fashion, 'header_cut', 'train-images-idx3-ubyte.gz: IDX header cut short'),
    (_fashion, 'magic', 'train-images-idx3-ubyte.gz: not an IDX file'),
    (_cifar, 'archive', 'cifar-10-binary.tar.gz: not a readable .tar.gz archive'),
    (_cifar, 'batch_length', 'data_batch_3.bin: 6145 bytes is not a whole number'),
    (_cifar, 'missing', 'missing CIFAR binary file(s) batches.meta.txt, data_batch_1.bin'),
]


@pytest.mark.parametrize(
    'source,broken,message', DATA_CASES, ids=lambda v: getattr(v, '__name__', v)
)
def test_bad_source_data(cli, source, broken, message, tmp_path, monkeypatch):
    if source is _cifar_endless:  # Its reads stop after 1,001 bytes.
        monkeypatch.setattr(cifar, 'MAX_FILE_BYTES', 1000)
    argv = source(tmp_path, broken)
    error = _error(cli, *argv, f'--workdir={tmp_path / "run"}')
    assert error is not None and error.startswith('error: ') and message in error, error
    assert not (tmp_path / 'run' / 'args.json').exists()
    assert not (tmp_path / 'run' / 'data').exists()


# A small run of the driver on tiny data, and what may go wrong with its folder.
@pytest.fixture
def tiny(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, 'tiny', fakes.tiny())
    argv = [
        '--dataset=tiny',
        '--imbalance=8',
        '--label_fraction=0.3',
        '--arch=cnn_small',
        '--generations=1',
        '--steps_per_generation=4',
        '--eval_every=2',
        '--batch_size=8',
        '--uratio=2',
        f'--workdir={tmp_path / "run"}',
    ]
    return argv, tmp_path / 'run'


def test_data_that_does_not_fit_a_preset_names_it_and_leaves_no_data_folder(cli, tmp_path):
    data = tmp_path / 'cifar'
    data.mkdir()
    error = _error(cli, '--preset=imagenet127', f'--data_dir={data}', f'--workdir={tmp_path / "r"}')
    assert error == (
        f'error: {data / "train"}: not found (expected train/<wnid>/*.JPEG) '
        '(--dataset=imagenet127, set by --preset=imagenet127)'
    )
    assert not (tmp_path / 'r' / 'data').exists()


def test_an_error_about_a_flag_given_does_not_blame_the_preset(cli, tmp_path):
    error = _error(cli, '--preset=imagenet127', f'--data_dir={tmp_path}', '--lr=-1')
    assert error == 'error: --lr must be > 0, got -1.0'


def test_a_fold_held_in_memory_that_cannot_fit_is_refused(cli, tiny, monkeypatch):
    argv, run = tiny
    monkeypatch.setattr(machine, 'available_memory', lambda: 1000)
    error = _error(cli, *argv, '--stream=never')
    assert error.startswith(
        f'error: --stream=never: holding the fold {run / "data"} in memory needs about 0.0 GiB'
    ), error
    assert error.endswith('--stream=always reads it from its files'), error
    assert not (run / 'args.json').exists()


def test_disk_full_is_one_line_error_and_marks_nothing_complete(cli, tiny, monkeypatch):
    argv, run = tiny

    def full(path, records):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(records, 'write_records', full)
    error = _error(cli, *argv)
    assert error.startswith('error: [Errno 28] No space left on device'), error
    assert not (run / 'args.json').exists() and not (run / 'data' / 'counts.json').exists()


def test_an_imbalance_that_empties_a_class_is_refused_before_any_work(cli, tiny):
    argv, run = tiny
    error = _error(cli, *argv, '--imbalance=30')  # 24 / 30: the last class keeps nothing.
    assert error.startswith('error: --imbalance must be in [1, 24] for tiny'), error
    assert not run.exists()


@pytest.mark.parametrize('name', ['args.json', 'data/counts.json', 'gen_00/evals.json'])
def test_a_record_file_that_is_not_json_is_named(cli, tiny, name):
    argv, run = tiny
    assert _error(cli, *argv) is None
    os.remove(run / 'gen_00' / 'metrics.json')  # So that the generation is read again.
    (run / name).write_text('{"cut short')
    error = _error(cli, *argv)
    assert error.startswith(f'error: {run / name}: not valid JSON'), error


def test_tensorflow_errors_are_one_line_without_its_wrapping(cli):
    """An unreadable image met in a tf.data pipeline, a missing file read in a graph:
    the message of the cause only."""
    decode = tf.data.Dataset.from_tensor_slices([b'not an image']).map(tf.io.decode_png)
    with pytest.raises(tf.errors.OpError) as e:
        list(decode)
    assert '{{function_node' in e.value.message
    line = cli._error_line(e.value)
    assert line.startswith('Error in user-defined function passed to MapDataset'), line
    assert line.endswith(
        'Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, WebP required.'
    )

    @tf.function
    def read(path):
        return tf.io.read_file(path)

    with pytest.raises(tf.errors.OpError) as e:
        read(tf.constant('/no/such/checkpoint'))
    assert cli._error_line(e.value) == '/no/such/checkpoint; No such file or directory'
    assert cli._error_line(OSError(28, 'No space left on device')) == (
        '[Errno 28] No space left on device'
    )


def test_a_diverging_loss_stops_at_the_evaluation_keeping_the_last_checkpoint(cli, tiny):
    argv, run = tiny
    error = _error(cli, *argv, '--fixmatch.threshold=0', '--fixmatch.wu=1e38')
    assert error.startswith('error: [gen 0/0] the training loss became nan by step 2'), error
    assert 'the last checkpoint (none yet) is kept' in error
    assert not (run / 'gen_00' / 'ckpt' / 'checkpoint').exists()
    assert not (run / 'gen_00' / 'evals.json').exists()


def test_a_rerun_with_other_settings_is_refused(cli, tiny):
    argv, run = tiny
    assert _error(cli, *argv) is None
    error = _error(cli, *argv, '--alpha=0.5')
    assert error.startswith(f'error: {run / "args.json"}: this run directory was made with other')


def test_files_cut_at_a_record_boundary_are_rebuilt(cli, tiny, capsys):
    argv, run = tiny
    assert _error(cli, *argv, '--generations=2') is None
    results = Results.read(str(run / 'results.json'))
    for name in ('data/unlabeled.tfrecord', 'gen_00/labeled.tfrecord'):
        examples = records.read_records(str(run / name))
        records.write_records(str(run / name), examples.take(np.arange(len(examples) - 3)))
    os.remove(run / 'results.json')
    capsys.readouterr()
    assert _error(cli, *argv, '--generations=2') is None
    log = capsys.readouterr().out
    assert 'unlabeled.tfrecord: not the file' in log and 'rebuilding the fold' in log
    assert 'gen_00/labeled.tfrecord: not the file' in log and 'redoing the pseudo-labels' in log
    assert (
        Results.read(str(run / 'results.json')).generations[0].picks == results.generations[0].picks
    )


def test_flags_over_a_preset_are_logged_one_line_each_and_args_json_resolves_them(
    cli, tiny, capsys
):
    argv, run = tiny
    assert _error(cli, *argv, '--method=mixmatch', '--algorithm=fixmatch', '--alpha=0.5') is None
    out = capsys.readouterr().out
    assert "--algorithm=fixmatch overrides --method=mixmatch's algorithm=mixmatch" in out
    assert (
        "--steps_per_generation=4 overrides --method=mixmatch's steps_per_generation=393216" in out
    )
    args = records.read_json(str(run / 'args.json'))
    assert (args['algorithm'], args['method'], args['alpha']) == ('fixmatch', 'mixmatch', 0.5)
    assert args['hparams'] == {'threshold': 0.95, 'wu': 1.0}  # FixMatch's own.
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['crest.py', '--preset=imagenet127', '--fixmatch.wu=2', '--lr=0.4'])
    assert cli._notes() == ["--fixmatch.wu=2.0 overrides --preset=imagenet127's fixmatch.wu=10.0"]
    flags.FLAGS.unparse_flags()


@pytest.mark.parametrize(
    'argv,warning',
    [
        (
            ['--algorithm=supervised', '--dist_align=constant'],
            'warning: --dist_align=constant does nothing with --algorithm=supervised (it trains '
            'on labeled images only)',
        ),
        (['--algorithm=supervised', '--uratio=3'], 'warning: --uratio=3 does nothing with'),
        (['--dist_align=none', '--t_min=0.7'], 'warning: --t_min=0.7 does nothing with --dist_'),
        (['--cb_beta=0.99'], 'warning: --cb_beta=0.99 does nothing with --labeled_weights=none'),
        (
            ['--generations=1', '--unlabeled_prior=estimated'],
            'warning: --unlabeled_prior=estimated does nothing with --generations=1',
        ),
        (
            ['--dist_align=none', '--unlabeled_prior=estimated'],
            'warning: --unlabeled_prior=estimated does nothing with --dist_align=none (an '
            'estimate is only recorded)',
        ),
    ],
)
def test_a_flag_that_does_nothing_is_warned(cli, argv, warning):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['crest.py', *argv])
    (line,) = cli._notes()
    assert line.startswith(warning), line
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['crest.py', '--dist_align=constant', '--t_min=0.7', '--uratio=3'])
    assert cli._notes() == []
    flags.FLAGS.unparse_flags()
