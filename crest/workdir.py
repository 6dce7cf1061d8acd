"""A run folder: its layout, its lock, its settings (args.json), how far it got, and
the agreement of the workers' copies of it in a multi-machine run.

Layout:
  WORKDIR/args.json             all settings
  WORKDIR/data/                 the fold (labeled/unlabeled/test .tfrecord, counts.json)
  WORKDIR/gen_XX/ckpt/, tb/     checkpoints and TensorBoard logs of generation XX
  WORKDIR/gen_XX/evals.json     every evaluation of the EMA model on the test set
  WORKDIR/gen_XX/test_probs.npy the final EMA model's test probabilities
  WORKDIR/gen_XX/labeled.tfrecord  original labeled set + this generation's picks
  WORKDIR/gen_XX/picks.json     per-class counts, precision and recall of the picks
  WORKDIR/gen_XX/metrics.json   the generation's numbers (written last: it is finished)
  WORKDIR/results.json          every generation's numbers
  WORKDIR/.lock                 held while a run trains in the folder
  WORKDIR/.worker_<i>/          worker i's own copy of all this, in a multi-machine run
"""

import contextlib
import os

import tensorflow as tf

from crest import config as config_lib
from libml import locks, records

ARGS = 'args.json'
RESULTS = 'results.json'
METRICS = 'metrics.json'
PICKS = 'picks.json'
EXPORT = 'labeled.tfrecord'


def fold_dir(workdir: str) -> str:
    return os.path.join(workdir, 'data')


def generation_dir(workdir: str, g: int) -> str:
    return os.path.join(workdir, f'gen_{g:02d}')


def check_writable(workdir: str) -> None:
    """Makes sure the run folder can be written (one-line errors otherwise)."""
    try:
        if tf.io.gfile.exists(workdir) and not tf.io.gfile.isdir(workdir):
            raise ValueError(f'--workdir {workdir}: exists and is not a folder')
        tf.io.gfile.makedirs(workdir)
        probe = os.path.join(workdir, 'write-test')
        records.write_json(probe, {})
        tf.io.gfile.remove(probe)
    except (OSError, tf.errors.OpError) as e:
        reason = getattr(e, 'message', None) or getattr(e, 'strerror', None) or str(e)
        raise ValueError(f'--workdir {workdir}: cannot write there ({reason})') from e


@contextlib.contextmanager
def lock(workdir: str, log):
    """Holds WORKDIR's lock while the run lives, so that a second run of the same folder
    (another terminal, a runner resuming what a person started) stops at once instead of
    training over the first one's files; then clears the temporary files an interrupted
    run left. Remote folders (gs://...) are not locked."""
    with contextlib.ExitStack() as stack:
        if '://' not in workdir:
            busy = (
                f'--workdir {workdir}: another run is using this folder; wait for it to end '
                'or stop it'
            )
            stack.enter_context(locks.hold(os.path.join(workdir, locks.RUN), busy))
        for path in records.remove_temporary_files(workdir):
            log(f'removed {path}, left by an interrupted run')
        yield


def check_args(cfg: config_lib.Config) -> None:
    """Checks a re-run uses the same settings as the saved args.json."""
    path = os.path.join(cfg.workdir, ARGS)
    if tf.io.gfile.exists(path):
        try:
            changed = config_lib.changed_settings(records.read_json(path), cfg)
        except ValueError as e:
            raise ValueError(f'{path}: {e}') from e
        if changed:
            raise ValueError(
                f'{path}: this run directory was made with other values of '
                f'{", ".join("--" + c for c in changed)}; use another --workdir'
            )


def write_args(cfg: config_lib.Config) -> None:
    records.write_json(os.path.join(cfg.workdir, ARGS), config_lib.saved_settings(cfg))


def worker_folder(strategy) -> str | None:
    """The sub-folder of WORKDIR a non-chief worker of a multi-machine run writes to
    (e.g. '.worker_1'); None on the chief and on a single machine."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or strategy.extended.should_checkpoint:
        return None
    return f'.{resolver.task_type}_{resolver.task_id}'


def progress(cfg: config_lib.Config) -> int:
    """Training steps this run folder holds: every finished generation's, plus the
    latest checkpoint's step in the first unfinished one."""
    done = 0
    for g in range(cfg.generations):
        gen_dir = generation_dir(cfg.workdir, g)
        if tf.io.gfile.exists(os.path.join(gen_dir, METRICS)):
            done += cfg.steps_per_generation
            continue
        latest = tf.train.latest_checkpoint(os.path.join(gen_dir, 'ckpt'))
        return done + (int(latest.rsplit('-', 1)[1]) if latest else 0)
    return done


def check_workers_agree(cfg: config_lib.Config, strategy) -> None:
    """Stops a multi-machine run whose workers would resume from different points
    (one crashed before its last checkpoint), which would pair their collective ops
    wrongly. Every worker keeps its own copy of the run; the copies agree when they
    stopped together."""
    if getattr(strategy, 'cluster_resolver', None) is None:
        return
    done = tf.constant([progress(cfg)], tf.int64)

    @tf.function
    def gather():
        def local():
            return tf.distribute.get_replica_context().all_gather(done, axis=0)

        return strategy.experimental_local_results(strategy.run(local))[0]

    every = gather().numpy()
    low, high = int(every.min()), int(every.max())
    if low != high:
        raise ValueError(
            f"the workers' copies of the run stopped at different points ({low} and {high} "
            "training steps done): copy the chief's WORKDIR (without its .worker_* folders) "
            "over each worker's copy, then start every worker again"
        )
