"""crest/results.py: a real run's results.json, metrics.json and picks.json read as
records write the same bytes again; a file that is not a run's results is refused in one
line naming it; the minority bias of a split, None where its classes are unknown."""

import json
import os

import pytest

from crest import config as config_lib
from crest import loop
from crest.results import Generation, OldFormatError, Picks, Results
from libml import datasets, metrics
from tests import fakes


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """(run folder, what loop.run returned) of two tiny CReST+ generations."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(datasets.DATASETS, 'tiny', fakes.tiny())
        cfg = config_lib.Config(
            workdir=str(tmp_path_factory.mktemp('results') / 'run'),
            dataset='tiny',
            imbalance=8,
            label_fraction=0.3,
            arch='cnn_small',
            generations=2,
            steps_per_generation=2,
            eval_every=2,
            batch_size=8,
            uratio=2,
            ema_warmup=True,
            seed=1,
        )
        return cfg.workdir, loop.run(cfg, log=lambda _: None)


def _dumps(record) -> str:
    """A record's JSON as the loop writes it (`records.write_json`)."""
    return json.dumps(record.to_json(), indent=1)


def test_a_real_runs_files_read_as_records_write_the_same_bytes(run):
    workdir, returned = run
    path = os.path.join(workdir, 'results.json')
    read = Results.read(path)
    assert _dumps(read) == open(path).read()
    assert _dumps(read) == _dumps(returned)
    assert read.generations[1].temperature == 0.5  # CReST+'s t_min for FixMatch.
    for g, generation in enumerate(read.generations):
        for name, record, in_results in (
            ('metrics.json', Generation, generation),
            ('picks.json', Picks, generation.picks),
        ):
            path = os.path.join(workdir, f'gen_{g:02d}', name)
            text = open(path).read()
            assert _dumps(record.from_json(json.loads(text), path)) == text
            assert record.from_json(json.loads(text), path) == in_results


def _without(data: dict, *keys):
    """`data` with the field at the path `keys` left out."""
    *parents, last = keys
    inner = data
    for key in parents:
        inner = inner[key]
    del inner[last]
    return data


@pytest.mark.parametrize(
    ('content', 'error', 'says'),
    [
        (lambda text: '[]', OldFormatError, ': not a JSON object'),
        (lambda text: '{}', ValueError, ': not a Results record (none of its fields)'),
        (lambda text: text[: len(text) // 2], ValueError, ': not valid JSON'),
        (
            lambda text: json.dumps(_without(json.loads(text), 'balanced_accuracy_la')),
            OldFormatError,
            ': written by an earlier version of this code (fields balanced_accuracy_la '
            'missing); run it again in a new --workdir',
        ),
        (
            lambda text: json.dumps(
                _without(json.loads(text), 'generations', 1, 'test', 'recall_la')
            ),
            OldFormatError,
            '/generations[1]/test: written by an earlier version of this code (fields '
            'recall_la missing)',
        ),
        (
            lambda text: json.dumps({**json.loads(text), 'derived_from': 'fixmatch'}),
            OldFormatError,
            ': written by an earlier version of this code (fields derived_from unknown)',
        ),
    ],
)
def test_a_file_that_is_not_a_runs_results_is_refused_in_one_line_naming_it(
    run, tmp_path, content, error, says
):
    text = open(os.path.join(run[0], 'results.json')).read()
    path = tmp_path / 'results.json'
    path.write_text(content(text))
    with pytest.raises(error) as raised:
        Results.read(str(path))
    message = str(raised.value)
    assert message.startswith(f'{path}{says}') and '\n' not in message, message


def test_minority_bias_of_a_split_none_where_its_classes_are_unknown():
    recall, precision, predicted = [0.9, 0.8, 0.5, 0.3], [0.6, 0.8, 0.9, 1.0], [50, 20, 10, 5]
    counts, names = [100, 40, 16, 6], ['a', 'b', 'c', 'd']
    run = fakes.run_results([0.6, 0.7], recall, precision, predicted, counts, names)
    expected = metrics.minority_bias(counts, recall, precision, predicted, names)
    assert run.minority_bias() == {'split': 'unlabeled', **expected}
    assert run.minority_bias('test', generation=0) == {'split': 'test', **expected}
    run.generations[1].unlabeled = None  # Unlabeled images without labels.
    assert run.minority_bias() is None
    assert run.minority_bias(generation=0) == {'split': 'unlabeled', **expected}
