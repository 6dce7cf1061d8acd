"""Classification metrics for long-tailed data: per-class recall and precision, and the
bias of a model on the minority classes.

Balanced accuracy (the paper's metric) is the mean per-class recall; on a balanced test
set it equals plain accuracy. A class that is never predicted has precision 0.
"""

import numpy as np


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    index = np.asarray(labels, np.int64) * num_classes + np.asarray(predictions, np.int64)
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    support = cm.sum(axis=1)
    return np.divide(np.diag(cm), support, out=np.zeros(len(cm)), where=support > 0)


def per_class_precision(cm: np.ndarray) -> np.ndarray:
    predicted = cm.sum(axis=0)
    return np.divide(np.diag(cm), predicted, out=np.zeros(len(cm)), where=predicted > 0)


def classification_report(labels, probs) -> dict:
    """Balanced accuracy, accuracy, per-class recall, precision and prediction counts of
    argmax(probs)."""
    return prediction_report(labels, probs.argmax(axis=1), probs.shape[1])


def prediction_report(labels, predicted, num_classes: int) -> dict:
    """`classification_report` from the predicted classes."""
    cm = confusion_matrix(labels, predicted, num_classes)
    recall = per_class_recall(cm)
    present = cm.sum(axis=1) > 0
    return {
        'balanced_accuracy': float(recall[present].mean()),
        'accuracy': float(np.trace(cm) / cm.sum()),
        'recall': recall.round(6).tolist(),
        'precision': per_class_precision(cm).round(6).tolist(),
        # Tells a never-predicted class (precision undefined, reported 0) from one whose
        # predictions are all wrong.
        'predicted': cm.sum(axis=0).tolist(),
    }


def logit_adjusted(probs, prior, tau: float = 1.0) -> np.ndarray:
    """Post-hoc logit adjustment (Menon et al., 2021): softmax(logits - tau * log prior),
    computed from probabilities as Normalize(probs / prior^tau).

    With prior the training label distribution, it trades the head classes' recall for
    the tail's; the argmax is the balanced-error-optimal one for a calibrated model.
    """
    adjusted = np.asarray(probs, np.float64) / np.asarray(prior, np.float64) ** tau
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def mean_of_last(values, n: int = 5) -> float:
    """The paper's reported number: the mean of the last n evaluations.

    `values` holds one scalar per evaluation (-> float) or one per-class list per
    evaluation (-> list, averaged class by class).
    """
    if not len(values):
        raise ValueError('no evaluations to average')
    mean = np.mean(np.asarray(values[-n:], np.float64), axis=0)
    return float(mean) if mean.ndim == 0 else mean.tolist()


def minority_bias(labeled_counts, recall, precision, predicted, class_names) -> dict:
    """FixMatch's bias as in the paper's Fig. 2, on the minority half of the classes
    (the smaller half by labeled count): mean precision, mean recall and their
    difference, from one split's per-class numbers (`prediction_report`). When no
    minority class is ever predicted, precision counts as 1 in the bias."""
    counts = list(labeled_counts)
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    minority = order[len(order) - len(order) // 2 :]
    # Precision of a class never predicted is undefined, not 0: left out of the mean.
    seen = [c for c in minority if predicted[c] > 0]
    mean_precision = sum(precision[c] for c in seen) / max(len(seen), 1)
    mean_recall = sum(recall[c] for c in minority) / len(minority)
    smallest = order[-1]
    return {
        'minority_precision': mean_precision if seen else None,
        'minority_recall': mean_recall,
        'bias': (mean_precision if seen else 1.0) - mean_recall,
        'never_predicted': [class_names[c] for c in minority if c not in seen],
        'smallest_class': class_names[smallest],
        'smallest_recall': recall[smallest],
        'smallest_precision': precision[smallest] if smallest in seen else None,
    }
