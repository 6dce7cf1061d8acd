"""Tests for crest/config.py: run folder names from the changed settings."""

import dataclasses

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
