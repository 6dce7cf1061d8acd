"""Tests for crest/config.py: run folder names from the changed settings."""

import dataclasses
import json
import os

import pytest

from crest import config as config_lib


def test_default_workdir_names_the_changed_settings_in_order():
    cfg = dataclasses.replace(
        config_lib.Config(), fold=2, dataset='fashion_mnist_lt', alpha=0.0, ema_warmup=True
    )
    assert config_lib.default_workdir(cfg) == (
        'runs/dataset=fashion_mnist_lt,fold=2,alpha=0,ema_warmup=True'
    )


def test_default_workdir_ignores_runtime_only_settings():
    cfg = dataclasses.replace(config_lib.Config(), data_dir='/data', workdir='x')
    assert config_lib.default_workdir(cfg, root='out') == 'out/paper'


def test_changed_settings_ignores_runtime_only_settings():
    saved = dataclasses.asdict(dataclasses.replace(config_lib.Config(), workdir='a', seed=3))
    cfg = dataclasses.replace(config_lib.Config(), workdir='b', seed=4, data_dir='/d')
    assert config_lib.changed_settings(saved, cfg) == ['seed']


def test_resolve_fills_the_algorithm_defaults_unless_set():
    mixmatch = config_lib.resolve(config_lib.Config(algorithm='mixmatch', alpha=0.25))
    assert (mixmatch.alpha, mixmatch.t_min) == (0.25, 0.8)  # Paper section 4.1, alpha set.
    assert (mixmatch.steps_per_generation, mixmatch.uratio) == (2**17, 1)
    assert mixmatch.hparams == {
        'K': 2,
        'T': 0.5,
        'mixup_beta': 0.75,
        'wu': 75.0,
        'rampup': 0.125,
        'rampup_max': 16384,
    }
    fixmatch = config_lib.resolve(config_lib.Config(hparams={'threshold': 0.9}))
    assert (fixmatch.alpha, fixmatch.t_min) == (1 / 3, 0.5)
    assert (fixmatch.steps_per_generation, fixmatch.uratio) == (2**16, 7)
    assert fixmatch.hparams == {'threshold': 0.9, 'wu': 1.0}


def test_unknown_or_bad_hyperparameter_is_an_error():
    with pytest.raises(ValueError, match=r'--fixmatch\.T: fixmatch has no such setting'):
        config_lib.resolve(config_lib.Config(hparams={'T': 0.5}))
    cfg = config_lib.resolve(config_lib.Config(algorithm='mixmatch', hparams={'T': 0.0}))
    with pytest.raises(ValueError, match=r'--mixmatch\.T must be > 0, got 0\.0'):
        config_lib.validate(cfg)


def test_default_workdir_names_algorithm_settings_against_its_defaults():
    cfg = config_lib.Config(algorithm='mixmatch', alpha=0.5, hparams={'T': 0.4})
    assert config_lib.default_workdir(cfg) == 'runs/algorithm=mixmatch,mixmatch.T=0.4'
    cfg = config_lib.Config(alpha=0.5, hparams={'threshold': 0.95})
    assert config_lib.default_workdir(cfg) == 'runs/alpha=0.5'


def test_args_of_an_earlier_version_are_refused_in_one_line():
    cfg = config_lib.resolve(config_lib.Config())
    saved = dataclasses.asdict(cfg)
    del saved['hparams']
    saved.update(threshold=0.95, wu=1.0)  # How an earlier version held FixMatch's settings.
    with pytest.raises(ValueError, match=r'earlier version of this code \(no hparams\)'):
        config_lib.changed_settings(saved, cfg)
    saved = dataclasses.asdict(cfg)
    del saved['precision']
    with pytest.raises(ValueError, match=r'\(no precision\): run in a new --workdir'):
        config_lib.changed_settings(saved, cfg)


def test_runtime_only_settings_may_change_on_resume():
    cfg = config_lib.resolve(config_lib.Config())
    saved = dataclasses.asdict(cfg)
    assert config_lib.changed_settings(saved, dataclasses.replace(cfg, precision='bf16')) == [
        'precision'
    ]
    # XLA only changes how the step is compiled: a resumed run may turn it on.
    assert config_lib.changed_settings(saved, dataclasses.replace(cfg, xla=True)) == []
    assert config_lib.default_workdir(dataclasses.replace(cfg, xla=True)) == 'runs/paper'
    assert config_lib.default_workdir(dataclasses.replace(cfg, precision='bf16')) == (
        'runs/precision=bf16'
    )


def test_the_users_data_needs_its_folder_and_is_named_by_it(tmp_path):
    cfg = config_lib.resolve(config_lib.Config(dataset='folder'))
    with pytest.raises(ValueError, match='--data_dir must be set for --dataset=folder'):
        config_lib.validate(cfg)
    with pytest.raises(ValueError, match='--data_dir must be an existing folder or file'):
        config_lib.validate(dataclasses.replace(cfg, data_dir=str(tmp_path / 'missing')))
    (tmp_path / 'my_images.npz').write_bytes(b'')
    path = str(tmp_path / 'my_images.npz')
    cfg = config_lib.resolve(config_lib.Config(dataset='npz', data_dir=path))
    config_lib.validate(cfg)  # --imbalance and --label_fraction are unused, not checked.
    assert config_lib.default_workdir(cfg) == os.path.join('runs', 'dataset=npz,data=my_images')
    for bad, message in (
        (dict(class_prior='analytic'), "--class_prior must be 'labeled' for npz"),
        (dict(fold=2), '--fold must be 1 for npz'),
        (dict(bad_images='ignore'), '--bad_images must be one of'),
        (dict(image_size=-1), '--image_size must be >= 0'),
        (dict(class_order=2), '--class_order must be 0 for npz'),
    ):
        with pytest.raises(ValueError, match=message):
            config_lib.validate(dataclasses.replace(cfg, **bad))
    with pytest.raises(ValueError, match='--image_size must be 0 for cifar10lt'):
        config_lib.validate(config_lib.resolve(config_lib.Config(image_size=16)))
    with pytest.raises(ValueError, match=r'--class_order must be in \[0, 4294967295\]'):
        config_lib.validate(config_lib.resolve(config_lib.Config(class_order=-1)))
    permuted = config_lib.resolve(config_lib.Config(class_order=2))
    assert config_lib.default_workdir(permuted) == os.path.join('runs', 'class_order=2')


def test_class_order_flag_is_a_seed_or_a_list():
    assert config_lib.parse_class_order('0') == 0 and type(config_lib.parse_class_order('0')) is int
    assert config_lib.parse_class_order('3') == 3
    order = config_lib.parse_class_order('6,4,2,0,9,1,3,5,7,8')
    assert order == [6, 4, 2, 0, 9, 1, 3, 5, 7, 8] and type(order) is list
    for bad in ('abc', '', '1.5', '6,4,x', '6,,4'):
        with pytest.raises(ValueError, match='^--class_order must be a seed .* got') as e:
            config_lib.parse_class_order(bad)
        assert '\n' not in str(e.value)


def test_an_explicit_class_order_is_checked_named_and_compared_as_saved(tmp_path):
    order = [6, 4, 2, 0, 9, 1, 3, 5, 7, 8]
    cfg = config_lib.resolve(config_lib.Config(class_order=order))
    config_lib.validate(cfg)
    assert config_lib.default_workdir(cfg) == os.path.join(
        'runs', 'class_order=6-4-2-0-9-1-3-5-7-8'
    )
    for bad, message in (
        ([6, 4, 2, 0, 9, 1, 3, 5, 7], r'permutation of 0\.\.9 \(missing: \[8\]\)'),
        ([6, 4, 2, 0, 9, 1, 3, 5, 7, 7], r'permutation of 0\.\.9 \(repeated: \[7\]\)'),
        ([6, 4, 2, 0, 9, 1, 3, 5, 7, 8, 10], r'permutation of 0\.\.9 \(out of range: \[10\]\)'),
        ([6, 4, 2, 0, 9, 1, 3, 5, 7, -8], r'permutation of 0\.\.9 \(out of range: \[-8\]\)'),
    ):
        with pytest.raises(ValueError, match=f'^--class_order must be a {message}, got') as e:
            config_lib.validate(dataclasses.replace(cfg, class_order=bad))
        assert '\n' not in str(e.value)
    cifar100 = dataclasses.replace(cfg, dataset='cifar100lt')
    with pytest.raises(ValueError, match=r'--class_order must be a permutation of 0\.\.99'):
        config_lib.validate(cifar100)
    config_lib.validate(dataclasses.replace(cifar100, class_order=list(range(100))[::-1]))
    (tmp_path / 'my_images.npz').write_bytes(b'')
    npz = dataclasses.replace(cfg, dataset='npz', data_dir=str(tmp_path / 'my_images.npz'))
    with pytest.raises(ValueError, match='--class_order must be 0 for npz'):
        config_lib.validate(npz)
    # args.json holds the list as JSON: a resumed run with the same list matches it.
    saved = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert saved['class_order'] == order
    assert config_lib.changed_settings(saved, cfg) == []
    for other in (0, 3, order[::-1]):
        changed = config_lib.changed_settings(saved, dataclasses.replace(cfg, class_order=other))
        assert changed == ['class_order']


def test_the_seed_form_of_class_order_is_saved_and_named_as_before():
    for seed, folder in ((0, 'paper'), (2, 'class_order=2')):
        cfg = config_lib.resolve(
            config_lib.Config(class_order=config_lib.parse_class_order(f'{seed}'))
        )
        saved = json.loads(json.dumps(dataclasses.asdict(cfg)))
        assert saved['class_order'] == seed and type(saved['class_order']) is int
        assert config_lib.changed_settings(saved, cfg) == []
        assert config_lib.default_workdir(cfg) == os.path.join('runs', folder)
