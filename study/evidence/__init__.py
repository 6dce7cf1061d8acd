"""The evidence study of docs/RESULTS.md: does CReST pay off at near-converged
generations, and where? scripts/evidence.py runs it; scripts/diagnose.py reads its map.

Every cell is a training run of scripts/crest.py on Fashion-MNIST-LT, in a folder
ROOT/[<precision>/]<setting>/total_<steps>/<method>/fold_<f>. Generations are S = STEPS
steps long: the convergence curve of the second edition (SECOND_EDITION) put FixMatch at
S 1.5 points under its plateau, and its doubling rule answered 2S; under the paper's
Table 2 rule FixMatch trains 2S, so shorter generations handicap self-training, not
FixMatch, and a gain found at S holds a fortiori. The stages, in the order they run:

1. check: FixMatch for CHECK_STEPS at the base setting, fold 1: the cell run again after
   a change to training code, to show its results unchanged (`same_results`).
2. base: at the base setting, folds 1-3, FixMatch for S (the Table 1 rule's baseline)
   and for 2S (the Table 2 rule's), CReST+ and CReST for 2 generations of S.
3. precision: FixMatch for S on base fold 1 in bf16. The map trains in bf16 if that run
   lands within two seed-to-seed standard deviations of the float32 one and trains at
   least BF16_MIN_SPEEDUP times as fast (`map_precision`).
4. map: fold 1 of each of `map_settings` (a hard tail, fewer labels, a longer tail,
   another permutation), the same four cells; FixMatch's bias is read off its S run.
5. extra: FixMatch + DA (t=0.5) for 2S on the base folds.

CReST's generation 0 is FixMatch's S run of the same setting, fold, seed and precision
(training is deterministic), so it starts from a copy of it (generation0.py) rather than
training it twice.

`plan(root)` lists the cells in the order they should run, as far as the finished ones
decide it (base fold 1's FixMatch decides the hard tail; the precision run decides the
map's precision), so that a study stopped anywhere and started again goes on where it
was. A finished cell's small files are copied to the records folder (`save_records`),
which is kept in the repository and from which the report is written.

The modules, one job each:
- design.py: the settings and cells, their flags and run folders (STEPS, BASE, Cell);
- planner.py: the plan, and the second edition's measurements that set it;
- progress.py: a cell's results and the steps it has left;
- timing.py: the ledger of the runs that ended, speeds and hours;
- generation0.py: a CReST cell's generation 0 copied from FixMatch's run;
- store.py: the records kept in the repository, and a re-run compared with them;
- regime.py: the regime map (FixMatch's bias against CReST's gain) and its prediction;
- document.py: docs/RESULTS.md, from the records alone.
Runs are read as crest.results.Results. All but regime.py and document.py (matplotlib)
import nothing heavier than NumPy (which the records need): the runner reads them while
its runs train.
"""
