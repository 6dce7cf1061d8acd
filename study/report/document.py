"""A whole report: the Markdown of tables and claims, a comparison of re-runs with the
table, and the document that puts hand-written notes above them."""

import os

from study.report import claims, tables
from study.report.runs import balanced, derived_from, mean_std, pct, signed, table, title

# Run settings that may differ between a run and its repetition.
RERUN_IGNORED = {'workdir', 'data_dir', 'method'}


def markdown(runs: dict, unfinished: list[str]) -> str:
    """Every table and the claims, in Markdown."""
    out = [tables.setting(runs)]
    out.append('\n### Balanced accuracy by method (paper Tables 1 and 2)\n')
    out.append(tables.methods_table(runs))
    out.append(tables.class_tables(runs))
    fixmatch = tables.fixmatch_table(runs)
    if fixmatch:
        out.append(fixmatch)
    out.append(tables.picks_table(runs))
    out.append(tables.generations_table(runs))
    out.append(tables.recall_change_table(runs))

    out.append("\n### The paper's claims on these runs\n")
    claim_table, missing = claims.paper_claims(runs)
    out.append(
        'Claims 2 and 3 and the orderings: a method beats another when the mean of their '
        'difference, paired by fold, exceeds both its fold-to-fold standard deviation and '
        '1 point (with one paired fold: undecided); claim 2 is "partly" held when the gain '
        'is not larger on the minority half of the classes; two methods are level when '
        "neither beats the other. Claim 1: held when FixMatch's precision on the minority "
        "half exceeds its recall there and that recall is below the majority half's. "
        'Claim 4 (no gain): held unless the last generation beats the first by more than '
        'the largest fold-to-fold standard deviation of any method (alpha=0 may run on one '
        'fold only, leaving no spread of its own).\n'
    )
    out.append(claim_table)
    if missing:
        out.append(f'\nNot checked (runs missing): {", ".join(missing)}.')
    out.append("\n### The paper's Table 2 orderings on these runs\n")
    out.append(claims.orderings(runs))
    if unfinished:
        out.append(f'\nUnfinished runs, left out: {", ".join(unfinished)}.')
    return '\n'.join(out) + '\n'


def reruns(runs: dict, again: dict, again_root: str) -> str:
    """Markdown comparing repeated runs with the same cells of the table."""
    # Imported here: it loads TensorFlow, which the rest of a report does without.
    from crest.config import flat_settings

    rows = []
    for method, folds in again.items():
        for fold, repeat in folds.items():
            if fold not in runs.get(method, {}) or derived_from(method):
                continue
            original = runs[method][fold]
            # Flattened, so that runs made before algorithms had settings of their own
            # compare with newer ones.
            old, new = flat_settings(original.args), flat_settings(repeat.args)
            differ = sorted(
                k
                for k in set(old) | set(new)
                if k not in RERUN_IGNORED and old.get(k) != new.get(k)
            )
            _, spread = mean_std([balanced(r) for r in runs[method].values()])
            diff = balanced(repeat) - balanced(original)
            if differ:
                verdict = f'not comparable: settings differ ({", ".join(differ)})'
            elif len(runs[method]) < 2:
                verdict = 'no fold spread to compare with'
            else:
                verdict = 'yes' if abs(diff) <= spread else 'no'
            rows.append(
                [
                    title(method),
                    str(fold),
                    pct(balanced(original)),
                    pct(balanced(repeat)),
                    signed(diff),
                    pct(spread),
                    verdict,
                ]
            )
    if not rows:
        return f'No run in {again_root} repeats a cell of the table.\n'
    return (
        f'Runs in `{again_root}` repeat cells of the table with the same settings; '
        'the difference should be within the fold-to-fold standard deviation of the method.\n\n'
        + table(
            ['method', 'fold', 'in the table', 're-run', 'difference', 'fold std', 'within'],
            rows,
        )
        + '\n'
    )


def write_document(path: str, notes: str, body: str, output: str, images: list[str]) -> None:
    """Writes notes + '## Results' + body + the plots (linked relative to `path`)."""
    rel = os.path.relpath(output, os.path.dirname(os.path.abspath(path)))
    links = '\n'.join(f'![{f}]({rel}/{f})' for f in images)
    with open(path, 'w') as f:
        f.write(notes + '## Results\n\n' + body + '\n### Plots\n\n' + links + '\n')
