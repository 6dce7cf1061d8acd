"""Semi-supervised algorithms, each one keras.Model subclass with its own train_step."""

from libml.algorithms.fixmatch import FixMatch
from libml.algorithms.mixmatch import MixMatch

ALGORITHMS = {'fixmatch': FixMatch, 'mixmatch': MixMatch}
