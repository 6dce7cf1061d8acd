"""The class-rebalancing math of CReST / CReST+ (Wei et al., CVPR 2021), as pure functions.

Classes are ranked by frequency, never assumed sorted by index: rank 1 is the most
frequent class. Ties keep index order.
"""

import numpy as np


def frequency_ranks(class_counts) -> np.ndarray:
    """ranks[c] = 0-based rank of class c by descending count (0 = most frequent)."""
    order = np.argsort(-np.asarray(class_counts, np.float64), kind='stable')
    ranks = np.empty(len(order), np.int64)
    ranks[order] = np.arange(len(order))
    return ranks


def sampling_rates(class_counts, alpha: float) -> np.ndarray:
    """Paper eq. 1: mu_l = (N_{L+1-l} / N_1)^alpha for the class of frequency rank l.

    The most frequent class gets the rate of the rarest, (N_L / N_1)^alpha, and the
    rarest gets 1: minority-class pseudo-labels are kept far more often. alpha = 0
    keeps every pseudo-label (plain self-training).

    Args:
      class_counts: per-class sizes (or any distribution proportional to them).
      alpha: the paper's alpha >= 0 (1/3 for FixMatch, 1/2 for MixMatch).
    Returns:
      mu[c] for each class index c.
    """
    if alpha < 0:
        raise ValueError(f'alpha must be >= 0, got {alpha}')
    counts = np.asarray(class_counts, np.float64)
    if np.any(counts <= 0):
        raise ValueError(f'every class needs a positive count, got {counts.tolist()}')
    descending = np.sort(counts)[::-1]
    return (descending[::-1][frequency_ranks(counts)] / descending[0]) ** alpha


LABELED_WEIGHTS = ('none', 'class_balanced', 'inverse_frequency')


def class_weights(class_counts, mode: str, beta: float = 0.9999) -> np.ndarray | None:
    """Per-class weights of the labeled loss, normalised to mean 1 over classes.

    'class_balanced' (Cui et al., 2019, the paper's CB): w_c proportional to
    (1 - beta) / (1 - beta^n_c), the inverse of the class's effective number of samples;
    beta = 0.9999 is Cui et al.'s choice for CIFAR-10-LT. 'inverse_frequency' (the
    reference code's `reweight_labeled`): w_c proportional to 1 / n_c. 'none': None.
    """
    if mode == 'none':
        return None
    counts = np.asarray(class_counts, np.float64)
    if np.any(counts <= 0):
        raise ValueError(f'every class needs a labeled example, got {counts.tolist()}')
    if mode == 'class_balanced':
        weights = (1.0 - beta) / (1.0 - beta**counts)
    elif mode == 'inverse_frequency':
        weights = 1.0 / counts
    else:
        raise ValueError(f'labeled weights must be one of {LABELED_WEIGHTS}, got {mode!r}')
    return weights / weights.mean()


def analytic_prior(num_classes: int, imbalance: float) -> np.ndarray:
    """The reference code's class prior p_c proportional to gamma^(-c/(L-1)), class 0 head."""
    exponent = -np.arange(num_classes) / max(num_classes - 1, 1)
    p = float(imbalance) ** exponent
    return p / p.sum()


def alignment_target(prior, temperature: float) -> np.ndarray:
    """CReST+ distribution-alignment target Normalize(p(y)^t); t=0 is uniform."""
    p = np.asarray(prior, np.float64) ** temperature
    return p / p.sum()


def temperature(generation: int, generations: int, t_min: float) -> float:
    """Paper eq. 2: t falls linearly from 1 at generation 0 to t_min at the last one.

    t_g = (1 - g/(G-1)) * 1 + g/(G-1) * t_min for g = 0..G-1; with G = 1, t = t_min.
    """
    if generations == 1:
        return float(t_min)
    frac = generation / (generations - 1)
    return float((1 - frac) * 1.0 + frac * t_min)


def select_pseudo_labels(probs: np.ndarray, rates) -> np.ndarray:
    """Indices of the pseudo-labels CReST keeps, most confident first within a class.

    For each predicted class c, of the n_c examples predicted as c keep the
    floor(n_c * mu_c) with the highest confidence (the softmax maximum).

    Args:
      probs: [N, L] predicted class probabilities of the unlabeled pool.
      rates: [L] per-class sampling rates mu.
    Returns:
      Indices into probs, grouped by predicted class in class order.
    """
    return select_by_confidence(probs.argmax(axis=1), probs.max(axis=1), rates)


def select_by_confidence(predicted: np.ndarray, confidence: np.ndarray, rates) -> np.ndarray:
    """`select_pseudo_labels` from each example's predicted class [N] and its confidence
    [N] alone: a per-class top-k that never needs all N x L probabilities at once."""
    picks = []
    for c, mu in enumerate(rates):
        members = np.flatnonzero(predicted == c)
        # 1e-9: mu = 1 must keep all, not floor(n * 0.9999999) = n - 1.
        keep = int(np.floor(len(members) * mu + 1e-9))
        most_confident = members[np.argsort(-confidence[members], kind='stable')]
        picks.append(most_confident[:keep])
    return np.concatenate(picks).astype(np.int64)


def em_prior(
    probs: np.ndarray,
    train_prior,
    floor: float = 0.01,
    tolerance: float = 1e-6,
    max_iterations: int = 1000,
) -> np.ndarray:
    """The class distribution of a set of images, estimated from a model's predictions
    on them by EM (Saerens, Latinne and Decaestecker, Neural Computation 2002).

    A model trained under the class prior p_t predicts p(y|x). Under another prior q,
    Bayes' rule gives p_q(y|x) proportional to p(y|x) q(y) / p_t(y). EM alternates:
    E, re-weight every image's prediction by q / p_t and normalise; M, q = the mean of
    those predictions; from q = p_t until q moves by less than `tolerance` (L1). The
    mean of the raw predictions, its first step, keeps the model's bias towards p_t.

    Args:
      probs: [N, L] the model's softmax on the N images.
      train_prior: [L] p_t, the class distribution the model was trained under.
      floor: each class keeps at least `floor / L` of the estimate (then renormalised):
        a class estimated absent would otherwise be aligned away for good.
    Returns:
      q [L], summing to 1.
    """
    probs = np.asarray(probs, np.float64)
    train_prior = np.asarray(train_prior, np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(train_prior) or not len(probs):
        raise ValueError(
            f'need predictions [N > 0, {len(train_prior)}], got shape {list(probs.shape)}'
        )
    if np.any(train_prior <= 0):
        raise ValueError(f'the training prior needs every class, got {train_prior.tolist()}')
    train_prior = train_prior / train_prior.sum()
    q = train_prior
    for _ in range(max_iterations):
        adjusted = probs * (q / train_prior)
        adjusted /= np.maximum(adjusted.sum(axis=1, keepdims=True), 1e-300)
        new = adjusted.mean(axis=0)
        converged = np.abs(new - q).sum() < tolerance
        q = new
        if converged:
            break
    q = np.maximum(q, floor / len(q))
    return q / q.sum()
