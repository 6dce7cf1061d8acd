"""The CReST generation loop: train -> pseudo-label -> rebalance -> export -> retrain.

Each generation trains a fresh model (new weights, optimizer, EMA and alignment state)
on the original labeled set plus the previous generation's picks, pseudo-labels the
unlabeled pool with the EMA model, keeps per predicted class the floor(n_c * mu_c) most
confident, and exports original + picks as WORKDIR/gen_XX/labeled.tfrecord.

A generation is finished when its metrics.json exists; a re-run skips it. An unfinished
generation resumes from its latest checkpoint.

Run layout:
  WORKDIR/args.json             all settings
  WORKDIR/data/                 the fold (labeled/unlabeled/test .tfrecord, counts.json)
  WORKDIR/gen_XX/ckpt/, tb/     checkpoints and TensorBoard logs of generation XX
  WORKDIR/gen_XX/evals.json     every evaluation of the EMA model on the test set
  WORKDIR/gen_XX/labeled.tfrecord  original labeled set + this generation's picks
  WORKDIR/gen_XX/picks.json     per-class counts, precision and recall of the picks
  WORKDIR/gen_XX/metrics.json   the generation's numbers (written last)
  WORKDIR/results.json          every generation's numbers
  WORKDIR/.lock                 held while a run trains in the folder
  WORKDIR/.worker_<i>/          worker i's own copy of all this, in a multi-machine run
"""

import contextlib
import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf

from crest import config as config_lib
from crest import rebalance
from libml import datasets, folds, locks, metrics, models, pipeline, records, train
from libml.algorithms import ALGORITHMS


def _check_workdir(workdir: str, log) -> None:
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
def _workdir_lock(workdir: str, log):
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


def _check_args(cfg: config_lib.Config) -> None:
    """Checks a re-run uses the same settings as the saved args.json."""
    path = os.path.join(cfg.workdir, 'args.json')
    if tf.io.gfile.exists(path):
        changed = config_lib.changed_settings(records.read_json(path), cfg)
        if changed:
            raise ValueError(
                f'{path}: this run directory was made with other values of '
                f'{", ".join("--" + c for c in changed)}; use another --workdir'
            )


def _read_export(gen_dir: str, images: bool = True) -> records.Records:
    """A generation's exported labeled set, checked against its picks.json."""
    picks_path = os.path.join(gen_dir, 'picks.json')
    expected = records.read_json(picks_path).get('export')  # None: written before digests.
    path = os.path.join(gen_dir, 'labeled.tfrecord')
    return records.read_records(path, expected, picks_path, images=images)


# Above this many bytes of decoded train and test images, --stream=auto streams them.
IN_MEMORY_LIMIT = 4 << 30


def _decoded_bytes(fold: dict, splits, shape) -> int:
    """The bytes a fold's images of `shape` take decoded: records x pixels."""
    files = fold.get('files', {})
    count = sum(files.get(f'{s}.tfrecord', {}).get('records') or sum(fold[s]) for s in splits)
    return count * int(np.prod(shape))


def _class_prior(cfg, labeled_counts) -> np.ndarray:
    if cfg.class_prior == 'analytic':
        return rebalance.analytic_prior(len(labeled_counts), cfg.imbalance)
    counts = np.asarray(labeled_counts, np.float64)
    return counts / counts.sum()


def pick_summary(unlabeled: records.Records, picks: np.ndarray, predicted, rates) -> dict:
    """Per-class counts of the picks, with their precision and recall, both counted over
    the images whose true class is known (all but some of the user's own)."""
    num_classes = len(rates)
    true, pred = unlabeled.labels[picks], predicted[picks]
    known = true >= 0
    picked = np.bincount(pred[known], minlength=num_classes)
    correct = np.bincount(pred[true == pred], minlength=num_classes)
    pool = np.bincount(unlabeled.labels[unlabeled.labels >= 0], minlength=num_classes)
    summary = {
        'rate': np.round(rates, 6).tolist(),
        'predicted': np.bincount(predicted, minlength=num_classes).tolist(),
        'picked': picked.tolist(),
        'correct': correct.tolist(),
        'precision': np.round(
            np.divide(correct, picked, out=np.zeros(num_classes), where=picked > 0), 6
        ).tolist(),
        'recall': np.round(
            np.divide(correct, pool, out=np.zeros(num_classes), where=pool > 0), 6
        ).tolist(),
        'total_picked': len(picks),
        'total_precision': float(correct.sum() / max(picked.sum(), 1)),
    }
    if not known.all():
        summary['unknown_class'] = int(len(picks) - known.sum())  # Picks no label checks.
    if not np.any(unlabeled.labels >= 0):  # Nothing to check against.
        for key in ('correct', 'precision', 'recall', 'total_precision'):
            summary[key] = None
    return summary


def run_generation(
    cfg, g, labeled, unlabeled, test, stream_images, rates, prior, strategy, log, original, val
) -> dict:
    """Trains generation g, then pseudo-labels, picks and exports; returns its metrics.

    `original` is the fold's labeled set, which the export holds with the picks. With
    `val`, every evaluation also reports the balanced accuracy on it. Streamed records
    (images left in their files) are streamed throughout."""
    gen_dir = os.path.join(cfg.workdir, f'gen_{g:02d}')
    tf.io.gfile.makedirs(gen_dir)
    num_classes = len(rates)
    image_shape = records.image_shape_of(test.path) if test.streamed else test.images.shape[1:]
    # The class distribution of this generation's labeled set (picks included): the
    # prior of logit adjustment and the counts of class-balanced weights.
    labeled_counts = np.bincount(labeled.labels, minlength=num_classes)
    la_prior = labeled_counts / labeled_counts.sum()
    t = rebalance.temperature(g, cfg.generations, cfg.t_min)
    if cfg.dist_align == 'none':
        p_target = None
    else:
        t = t if cfg.dist_align == 'progressive' else cfg.t_min
        p_target = rebalance.alignment_target(prior, t)
    # Every random draw of the generation follows this seed: the model's initialisation,
    # the data stream's orders and augmentations, the train step's own draws.
    seed = cfg.seed * 1000 + g
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = ALGORITHMS[cfg.algorithm](
            lambda: models.build_model(cfg.arch, num_classes, image_shape, cfg.precision),
            num_classes,
            wd=cfg.wd,
            ema_decay=cfg.ema_decay,
            ema_warmup=cfg.ema_warmup,
            p_target=p_target,
            total_steps=cfg.steps_per_generation,
            class_weights=rebalance.class_weights(labeled_counts, cfg.labeled_weights, cfg.cb_beta),
            seed=seed,
            **cfg.hparams,
        )
        model.compile(
            optimizer=train.make_optimizer(cfg.lr, cfg.steps_per_generation, cfg.lr_decay_level)
        )
    # The global batch, split across the replicas inside the train step.
    stream = pipeline.train_dataset(
        labeled,
        stream_images,
        cfg.batch_size,
        cfg.uratio,
        model.views,
        seed=seed,
        resample=cfg.resample,
    )
    latest = {}  # The last evaluation's test probabilities.

    def evaluate():
        latest['probs'] = train.predict(model.ema_net, pipeline.image_batches(test))
        report = metrics.classification_report(test.labels, latest['probs'])
        adjusted = metrics.classification_report(
            test.labels, metrics.logit_adjusted(latest['probs'], la_prior)
        )
        numbers = {
            'acc/balanced': report['balanced_accuracy'],
            'recall': report['recall'],
            'precision': report['precision'],
            'predicted': report['predicted'],
            'acc/balanced_la': adjusted['balanced_accuracy'],
            'recall_la': adjusted['recall'],
        }
        if val is not None:
            on_val = metrics.classification_report(
                val.labels, train.predict(model.ema_net, pipeline.image_batches(val))
            )
            numbers['acc/balanced_val'] = on_val['balanced_accuracy']
        return numbers

    prefix = f'[gen {g}/{cfg.generations - 1}] '
    log(
        f'{prefix}labeled {len(labeled)} ({int(labeled.pseudo.sum())} pseudo-labeled), '
        f'DA {"off" if p_target is None else f"t={t:.2f}"}'
    )
    start = time.time()
    evals = train.train(
        model,
        stream,
        cfg.steps_per_generation,
        cfg.eval_every,
        gen_dir,
        evaluate,
        strategy=strategy,
        log=log,
        prefix=prefix,
        jit_compile=cfg.xla,
    )

    # The final model's test probabilities, from which every test number can be redone.
    probs_test = latest.get('probs')
    if probs_test is None:  # Trained before a restart: the restored EMA model is final.
        probs_test = train.predict(model.ema_net, pipeline.image_batches(test))
    records.write_array(os.path.join(gen_dir, 'test_probs.npy'), probs_test)

    # Pseudo-label the unlabeled pool: EMA model, no augmentation, raw softmax; keep
    # each image's predicted class and its probability only.
    predicted, confidence = train.predict_classes(model.ema_net, pipeline.image_batches(unlabeled))
    picks = rebalance.select_by_confidence(predicted, confidence, rates)
    export_path = os.path.join(gen_dir, 'labeled.tfrecord')
    if unlabeled.streamed:
        exported = records.export_streamed(
            export_path, original, unlabeled, picks, predicted[picks], confidence[picks], seed
        )
    else:
        picked = unlabeled.take(picks)
        picked.labels = predicted[picks]
        picked.pseudo = np.ones(len(picks), np.int64)
        picked.confidence = confidence[picks].astype(np.float32)
        exported = records.write_records(export_path, records.Records.concat([original, picked]))
    # What the export holds, checked by whoever reads it.
    picks_info = {**pick_summary(unlabeled, picks, predicted, rates), 'export': exported}
    records.write_json(os.path.join(gen_dir, 'picks.json'), picks_info)

    # Test numbers are means over the last 5 evaluations, as the paper reports them;
    # the unlabeled-set ones are of the final EMA model, the one that made the picks.
    result = {
        'generation': g,
        'temperature': None if p_target is None else t,
        'labeled_size': len(labeled),
        'balanced_accuracy': metrics.mean_of_last([e['acc/balanced'] for e in evals]),
        'evals': [{'step': e['step'], 'balanced_accuracy': e['acc/balanced']} for e in evals],
        'balanced_accuracy_la': metrics.mean_of_last([e['acc/balanced_la'] for e in evals]),
        'test': {
            'balanced_accuracy': metrics.mean_of_last([e['acc/balanced'] for e in evals]),
            'recall': metrics.mean_of_last([e['recall'] for e in evals]),
            'precision': metrics.mean_of_last([e['precision'] for e in evals]),
            'predicted': metrics.mean_of_last([e['predicted'] for e in evals]),
            'final_balanced_accuracy': evals[-1]['acc/balanced'],
            # Post-hoc logit adjustment by the labeled class distribution (tau = 1).
            'balanced_accuracy_la': metrics.mean_of_last([e['acc/balanced_la'] for e in evals]),
            'recall_la': metrics.mean_of_last([e['recall_la'] for e in evals]),
            'final_balanced_accuracy_la': evals[-1]['acc/balanced_la'],
            'la_prior': np.round(la_prior, 6).tolist(),
        },
        'unlabeled': _known_report(unlabeled.labels, predicted, num_classes),
        'picks': picks_info,
        'seconds': round(time.time() - start, 1),
    }
    if val is not None:
        result['balanced_accuracy_val'] = metrics.mean_of_last(
            [e['acc/balanced_val'] for e in evals]
        )
    records.write_json(os.path.join(gen_dir, 'metrics.json'), result)
    return result


def _known_report(labels, predicted, num_classes) -> dict | None:
    """The classification report of the images whose class is known; None if none is."""
    known = labels >= 0
    if not known.any():
        return None
    return metrics.prediction_report(labels[known], predicted[known], num_classes)


def worker_folder(strategy) -> str | None:
    """The sub-folder of WORKDIR a non-chief worker of a multi-machine run writes to
    (e.g. '.worker_1'); None on the chief and on a single machine."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or strategy.extended.should_checkpoint:
        return None
    return f'.{resolver.task_type}_{resolver.task_id}'


def _progress(cfg) -> int:
    """Training steps this run folder holds: every finished generation's, plus the
    latest checkpoint's step in the first unfinished one."""
    done = 0
    for g in range(cfg.generations):
        gen_dir = os.path.join(cfg.workdir, f'gen_{g:02d}')
        if tf.io.gfile.exists(os.path.join(gen_dir, 'metrics.json')):
            done += cfg.steps_per_generation
            continue
        latest = tf.train.latest_checkpoint(os.path.join(gen_dir, 'ckpt'))
        return done + (int(latest.rsplit('-', 1)[1]) if latest else 0)
    return done


def _check_workers_agree(cfg, strategy) -> None:
    """Stops a multi-machine run whose workers would resume from different points
    (one crashed before its last checkpoint), which would pair their collective ops
    wrongly. Every worker keeps its own copy of the run; the copies agree when they
    stopped together."""
    progress = tf.constant([_progress(cfg)], tf.int64)

    @tf.function
    def gather():
        def local():
            return tf.distribute.get_replica_context().all_gather(progress, axis=0)

        return strategy.experimental_local_results(strategy.run(local))[0]

    every = gather().numpy()
    low, high = int(every.min()), int(every.max())
    if low != high:
        raise ValueError(
            f"the workers' copies of the run stopped at different points ({low} and {high} "
            "training steps done): copy the chief's WORKDIR (without its .worker_* folders) "
            "over each worker's copy, then start every worker again"
        )


def run(cfg: config_lib.Config, strategy=None, log=print) -> dict:
    """Runs (or resumes) all generations; returns and writes WORKDIR/results.json.

    Under MultiWorkerMirroredStrategy every worker runs this in lockstep on the same
    data; the chief writes WORKDIR, each other worker its own copy of the run in
    WORKDIR/.worker_<i> (`worker_folder`), which it resumes from.
    """
    cfg = config_lib.resolve(cfg)
    config_lib.validate(cfg)
    if not cfg.workdir:
        cfg = dataclasses.replace(cfg, workdir=config_lib.default_workdir(cfg))
        log(f'run folder: {cfg.workdir}')
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise ValueError(
            f'--batch_size {cfg.batch_size} (the global batch) must be a multiple of the '
            f'{replicas} replicas'
        )
    worker = worker_folder(strategy)
    if worker:
        cfg = dataclasses.replace(cfg, workdir=os.path.join(cfg.workdir, worker))
    _check_workdir(cfg.workdir, log)
    with _workdir_lock(cfg.workdir, log):
        return _run(cfg, strategy, replicas, log)


def _run(cfg: config_lib.Config, strategy, replicas: int, log) -> dict:
    """`run` once its folder is checked and locked."""
    _check_args(cfg)
    fold_dir = os.path.join(cfg.workdir, 'data')
    dataset = datasets.get(cfg.dataset)
    spec = config_lib.fold_spec(cfg)
    fold = folds.ensure_fold(dataset, spec, fold_dir, log)
    shape = folds.image_shape_of_fold(fold, dataset)
    stream = cfg.stream == 'always' or (
        cfg.stream == 'auto'
        and _decoded_bytes(fold, folds.fold_splits(fold), shape) > IN_MEMORY_LIMIT
    )
    splits = {
        s: folds.read_split(fold_dir, s, fold, images=not stream) for s in folds.fold_splits(fold)
    }
    labeled0, unlabeled, test, val = (splits.get(s) for s in (*folds.SPLITS, 'val'))
    names = fold['class_names']
    counts = np.bincount(labeled0.labels, minlength=len(names))
    if np.any(counts == 0):
        empty = ', '.join(names[c] for c in np.flatnonzero(counts == 0))
        raise ValueError(f'no labeled example of class(es) {empty}: raise --label_fraction')
    # Written once every check has passed, so that a mistake does not lock the folder.
    records.write_json(os.path.join(cfg.workdir, 'args.json'), dataclasses.asdict(cfg))
    if replicas > 1 and getattr(strategy, 'cluster_resolver', None) is not None:
        _check_workers_agree(cfg, strategy)
    prior = _class_prior(cfg, counts)
    rates = rebalance.sampling_rates(prior, cfg.alpha)
    # The unlabeled stream is the whole long-tailed train set, labels unused.
    if stream:
        stream_images = [labeled0.path, unlabeled.path]
        log(f'images streamed from {fold_dir} (--stream={cfg.stream})')
    else:
        stream_images = np.concatenate([labeled0.images, unlabeled.images])
    log(
        f'{cfg.dataset} ({dataset.describe(spec)}): {len(labeled0)} labeled, '
        f'{len(unlabeled)} unlabeled, {len(test)} test'
        + (f', {len(val)} val' if val is not None else '')
        + '; labeled per class: '
        + ', '.join(f'{n} {c}' for n, c in zip(names, counts.tolist(), strict=True))
    )
    log(f'sampling rates mu: {np.round(rates, 3).tolist()}')
    log(
        f'{cfg.algorithm} {cfg.hparams}: {cfg.generations} generation(s) of '
        f'{cfg.steps_per_generation} steps, {cfg.batch_size} labeled + '
        f'{cfg.batch_size * cfg.uratio} unlabeled images per step'
        + (f', split over {replicas} replicas' if replicas > 1 else '')
    )

    generations = []
    labeled = labeled0
    for g in range(cfg.generations):
        gen_dir = os.path.join(cfg.workdir, f'gen_{g:02d}')
        done = os.path.join(gen_dir, 'metrics.json')
        result = records.read_json(done) if tf.io.gfile.exists(done) else None
        if result is not None:
            try:
                exported = _read_export(gen_dir, images=not stream)
                log(
                    f'[gen {g}/{cfg.generations - 1}] finished earlier, skipped: '
                    f'balanced acc {result["balanced_accuracy"]:.4f}'
                )
            except records.DataError as e:
                # Its final checkpoint is kept: redoing it only pseudo-labels again.
                log(f'{e}; redoing the pseudo-labels of generation {g}')
                result = None
        if result is None:
            result = run_generation(
                cfg,
                g,
                labeled,
                unlabeled,
                test,
                stream_images,
                rates,
                prior,
                strategy,
                log,
                original=labeled0,
                val=val,
            )
            exported = _read_export(gen_dir, images=not stream)
        labeled = exported  # The next generation's labeled set.
        recall = result['test']['recall']
        log(
            f'[gen {g}/{cfg.generations - 1}] balanced acc {result["balanced_accuracy"]:.4f} '
            f'(mean of last 5 evals; with logit adjustment '
            f'{result.get("balanced_accuracy_la", float("nan")):.4f})  minority-class recall '
            f'{", ".join(f"{names[c]} {recall[c]:.3f}" for c in np.argsort(counts)[:3])}  '
            f'picks {result["picks"]["total_picked"]}'
            + (
                f' ({result["picks"]["total_precision"]:.1%} correct)'
                if result['picks']['total_precision'] is not None
                else ''
            )
        )
        generations.append(result)

    results = {
        'args': dataclasses.asdict(cfg),
        'class_names': names,
        'labeled_counts': counts.tolist(),
        'sampling_rates': np.round(rates, 6).tolist(),
        'balanced_accuracy': generations[-1]['balanced_accuracy'],
        'balanced_accuracy_la': generations[-1].get('balanced_accuracy_la'),
        'generations': generations,
    }
    split = 'unlabeled' if generations[0].get('unlabeled') else 'test'
    bias = metrics.minority_bias(results, split, generation=0)
    records.write_json(os.path.join(cfg.workdir, 'results.json'), results)
    precision = bias['minority_precision']
    log(
        f'generation 0 on the {split} set, minority half of the classes: precision '
        f'{"undefined (never predicted)" if precision is None else f"{precision:.1%}"}, '
        f'recall {bias["minority_recall"]:.1%}; will class-rebalancing pay off? '
        f'python scripts/diagnose.py --run={cfg.workdir}'
    )
    return results
