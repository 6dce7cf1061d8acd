"""The data sets, by --dataset name: each a plug-in behind the interface of base.py.

A data set of a new kind is one module in this package, a `base.Dataset` subclass
(`longtail.LongTailed` for a balanced source made long-tailed: it then only loads the
source), and one line in DATASETS.
"""

from libml.datasets import base, cifar, fashion_mnist, folder, imagenet127, longtail, npz, synthetic

DATASETS: dict[str, base.Dataset] = {
    # M_1 (unlabeled_head) of --unlabeled_distribution uniform or reversed: DASO's and
    # ACR's, 4,000 beside N_1 = 500 labeled for CIFAR-10, 300 beside 150 for CIFAR-100
    # (--label_fraction=0.3 there); Fashion-MNIST-LT takes CIFAR-10's.
    'cifar10lt': cifar.Cifar('cifar10lt', 10, head_count=5000, unlabeled_head=4000),
    'cifar100lt': cifar.Cifar('cifar100lt', 100, head_count=500, unlabeled_head=300),
    'fashion_mnist_lt': fashion_mnist.FashionMnist('fashion_mnist_lt'),
    # DARP's protocol (the paper's Table 3): N_1 = 1500 labeled, M_1 = 3000 unlabeled.
    'cifar10_darp': cifar.Cifar('cifar10_darp', 10, head_count=1500, darp_unlabeled_head=3000),
    # The user's own images, used as they are: a folder, or arrays in an .npz file.
    'folder': folder.Folder('folder'),
    'npz': npz.Npz('npz'),
    # ImageNet's 1000 classes in 127 groups, naturally long-tailed.
    'imagenet127': imagenet127.ImageNet127('imagenet127'),
    'synthetic_lt': synthetic.Synthetic('synthetic_lt', unlabeled_head=80),
}


def get(name: str) -> base.Dataset:
    """The data set registered as `name`."""
    if name not in DATASETS:
        raise ValueError(f'unknown dataset {name!r}; choose one of {", ".join(DATASETS)}')
    return DATASETS[name]


def long_tailed() -> list[str]:
    """The names of the balanced sources made long-tailed, whose folds are held in
    memory (`longtail.LongTailed.splits`)."""
    return [name for name, dataset in DATASETS.items() if isinstance(dataset, longtail.LongTailed)]
