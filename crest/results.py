"""What a run reports, as typed records: WORKDIR/results.json, each generation's
metrics.json and picks.json. crest/loop.py writes them; every reader (the reports, the
study, scripts/diagnose.py, the tests) reads them through these types, never by key.

Each record's JSON keeps its fields in their declared order, so that the same run
writes the same bytes. A field declared `optional` is left out of the JSON while None
(a run without a validation split has no `balanced_accuracy_val`).
"""

import dataclasses
import json
import types
import typing

from libml import metrics


def optional():
    """A field left out of the JSON while None."""
    return dataclasses.field(default=None, metadata={'optional': True})


class OldFormatError(ValueError):
    """A results file written by an earlier version of this code."""


@dataclasses.dataclass
class Record:
    """Base: to and from the JSON of a dataclass whose fields are JSON values, records or
    lists of records."""

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get('optional'):
                continue
            out[f.name] = _to_json(value)
        return out

    @classmethod
    def from_json(cls, data: dict, where: str = ''):
        """The record of `data`; OldFormatError naming `where` if a field is missing or
        unknown (a file of an earlier version), ValueError if it has none of them."""
        if not isinstance(data, dict):
            raise OldFormatError(f'{where}: not a JSON object')
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        required = [n for n, f in fields.items() if not f.metadata.get('optional')]
        missing = [n for n in required if n not in data]
        unknown = sorted(set(data) - set(fields))
        if len(missing) == len(required):
            raise ValueError(f'{where}: not a {cls.__name__} record (none of its fields)')
        if missing or unknown:
            raise OldFormatError(
                f'{where}: written by an earlier version of this code (fields '
                + ', '.join(
                    [*(f'{n} missing' for n in missing), *(f'{n} unknown' for n in unknown)]
                )
                + '); run it again in a new --workdir'
            )
        return cls(**{n: _from_json(hints[n], v, f'{where}/{n}') for n, v in data.items()})


def _to_json(value):
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    return value


def _record_type(hint):
    """The Record class in a type hint (X, list[X], X | None), or None."""
    for arg in (hint, *typing.get_args(hint)):
        if isinstance(arg, type) and issubclass(arg, Record):
            return arg
    return None


def _from_json(hint, value, where):
    if value is None:
        return None
    record = _record_type(hint)
    if record is None:
        return value
    origin = typing.get_origin(hint)
    if origin is list:
        return [record.from_json(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if origin in (types.UnionType, typing.Union) or hint is record:
        return record.from_json(value, where)
    return value


@dataclasses.dataclass
class Eval(Record):
    step: int
    balanced_accuracy: float


@dataclasses.dataclass
class Report(Record):
    """Per-class numbers of a model's predictions on the images of known class of a
    split (`libml.metrics.prediction_report`)."""

    balanced_accuracy: float
    accuracy: float
    recall: list[float]
    precision: list[float]  # 0 for a class never predicted: see `predicted`.
    predicted: list[int]


@dataclasses.dataclass
class TestReport(Record):
    """The test set's numbers: the mean of the last 5 evaluations (the paper's), and the
    last one; `_la`: after post-hoc logit adjustment by `la_prior`."""

    balanced_accuracy: float
    recall: list[float]
    precision: list[float]
    predicted: list[float]  # Means over evaluations.
    final_balanced_accuracy: float
    balanced_accuracy_la: float
    recall_la: list[float]
    final_balanced_accuracy_la: float
    la_prior: list[float]


@dataclasses.dataclass
class Picks(Record):
    """A generation's pseudo-labels: picks.json. Per class (by predicted class): the
    sampling rate mu, the unlabeled images predicted, picked (all picks) and picked
    correctly, with precision and recall over the images whose class is known; when some
    picks' class is not known, `unknown_class` counts them and `picked_known` counts per
    class those it is known of; `export`: the exported labeled set's number of records
    and digest."""

    rate: list[float]
    predicted: list[int]
    picked: list[int]
    correct: list[int] | None
    precision: list[float] | None
    recall: list[float] | None
    total_picked: int
    total_precision: float | None
    unknown_class: int | None = optional()  # Picks whose class is not known.
    picked_known: list[int] | None = optional()
    export: dict | None = None

    @property
    def checked(self) -> list[int]:
        """Per class, the picks whose class is known: what `correct` is out of."""
        return self.picked if self.picked_known is None else self.picked_known


@dataclasses.dataclass
class PriorEstimate(Record):
    """The unlabeled set's class distribution estimated after a generation, by EM from
    the EMA model's predictions (`crest.rebalance.em_prior`); and, when every unlabeled
    image's class is known, the L1 distance to the true distribution of the estimate,
    of the mean of the raw predictions and of the labeled distribution."""

    estimate: list[float]
    error: float | None
    error_of_predictions: float | None
    error_of_labeled: float | None


@dataclasses.dataclass
class Generation(Record):
    """One generation's numbers: metrics.json, and an entry of results.json."""

    generation: int
    temperature: float | None  # The alignment temperature; None without alignment.
    labeled_size: int
    balanced_accuracy: float  # On the test set, mean of the last 5 evaluations.
    evals: list[Eval]
    balanced_accuracy_la: float
    test: TestReport
    unlabeled: Report | None  # None when no unlabeled image has a known class.
    picks: Picks
    seconds: float  # Wall time of the generation's last stretch of training.
    balanced_accuracy_val: float | None = optional()
    # With --unlabeled_prior=estimated: the base of the next generation's alignment.
    unlabeled_prior: PriorEstimate | None = optional()


@dataclasses.dataclass
class Results(Record):
    """A whole run: results.json."""

    args: dict  # Every setting (crest.config.Config).
    class_names: list[str]
    labeled_counts: list[int]
    sampling_rates: list[float]
    balanced_accuracy: float  # The last generation's.
    balanced_accuracy_la: float
    generations: list[Generation]

    def minority_bias(self, split: str = 'unlabeled', generation: int = -1) -> dict | None:
        """FixMatch's bias (`libml.metrics.minority_bias`) on `split` ('unlabeled' or
        'test') of a generation, the last by default, with the split's name; None when
        that split's classes are not known."""
        report = getattr(self.generations[generation], split)
        if report is None:
            return None
        numbers = (report.recall, report.precision, report.predicted)
        return {
            'split': split,
            **metrics.minority_bias(self.labeled_counts, *numbers, self.class_names),
        }

    @classmethod
    def read(cls, path: str) -> 'Results':
        """results.json at `path`; OSError if unreadable, OldFormatError if of an earlier
        version, ValueError if not JSON or without a generation."""
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f'{path}: not valid JSON ({e})') from e
        results = cls.from_json(data, path)
        if not results.generations:
            raise ValueError(f'{path}: holds no generation')
        return results
