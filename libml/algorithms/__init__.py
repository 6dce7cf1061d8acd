"""Semi-supervised algorithms, each one keras.Model subclass with its own train_step."""

from libml.algorithms.fixmatch import FixMatch
from libml.algorithms.mean_teacher import MeanTeacher
from libml.algorithms.mixmatch import MixMatch
from libml.algorithms.pseudo_label import PseudoLabel
from libml.algorithms.supervised import Supervised

ALGORITHMS = {
    'fixmatch': FixMatch,
    'mixmatch': MixMatch,
    'pseudo_label': PseudoLabel,
    'mean_teacher': MeanTeacher,
    'supervised': Supervised,
}
