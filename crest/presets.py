"""Whole-experiment presets: the settings of one of the paper's data protocols.

`--preset=NAME` sets them; flags given explicitly win, and a method preset
(`--method`, crest/methods.py) may be combined with one.

imagenet127 is the paper's Table 4 setting (section 4.2): ImageNet127, beta = 10%,
ResNet-50, 3 generations with alpha = 0.7 and t_min = 0.5, each generation trained with
FixMatch's ImageNet hyperparameters. Those are taken from FixMatch's own ImageNet code
(google-research/fixmatch, imagenet/): threshold 0.7, unlabeled loss weight 10, 1024
labeled + 5 x 1024 unlabeled images per step, SGD with Nesterov momentum at lr 0.4
(0.1 per 256 labeled images), weight decay 3e-4 on sum(w^2) (6e-4 in this project's
0.5 sum(w^2) convention), EMA 0.999, 300 epochs of the unlabeled stream (1.28M
images / 5,120 per step: 75,000 steps), 224 x 224 images. Differences, all this
project's: the learning rate follows its cosine decay (level 7, FixMatch's CIFAR one)
instead of FixMatch's warmup and step decay; the augmentations are the CIFAR ones (pad
and crop, flip; RandAugment and Cutout), not an Inception crop; and images are resized
once, when the fold is written. The paper gives no more detail of its ImageNet127 runs.
"""

PRESETS = {
    'imagenet127': dict(
        dataset='imagenet127',
        label_fraction=0.1,
        image_size=224,
        arch='resnet50',
        algorithm='fixmatch',
        hparams=dict(threshold=0.7, wu=10.0),
        batch_size=1024,
        uratio=5,
        lr=0.4,
        lr_decay_level=7.0,
        wd=6e-4,
        ema_decay=0.999,
        steps_per_generation=75_000,
        generations=3,
        alpha=0.7,
        t_min=0.5,
        dist_align='progressive',
    ),
}


def settings(name: str) -> dict:
    """The Config values of preset `name`; ValueError for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f'--preset must be one of {list(PRESETS)}, got {name!r}')
    return {**PRESETS[name], 'preset': name}
