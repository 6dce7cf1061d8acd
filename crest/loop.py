"""The CReST generation loop: train -> pseudo-label -> rebalance -> export -> retrain.

Each generation trains a fresh model (new weights, optimizer, EMA and alignment state)
on the original labeled set plus the previous generation's picks, pseudo-labels the
unlabeled pool with the EMA model, keeps per predicted class the floor(n_c * mu_c) most
confident, and exports original + picks as WORKDIR/gen_XX/labeled.tfrecord (the run
folder's layout: crest/workdir.py), and the EMA model itself for use outside this code
(crest/export.py).

A generation is finished when its metrics.json exists; a re-run skips it. An unfinished
generation resumes from its latest checkpoint.
"""

import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf

from crest import config as config_lib
from crest import export, rebalance, results, summaries, workdir
from libml import datasets, folds, machine, metrics, models, pipeline, records, train
from libml.algorithms import ALGORITHMS

# Above this many bytes of decoded train and test images, --stream=auto streams them.
IN_MEMORY_LIMIT = 4 << 30


@dataclasses.dataclass
class RunData:
    """What every generation of a run reads: the fold's splits (`val` None without one),
    the images of the unlabeled stream (an array, or the files to stream), the class
    names and labeled counts, and CReST's class prior and sampling rates mu."""

    labeled: records.Records
    unlabeled: records.Records
    test: records.Records
    val: records.Records | None
    stream_images: np.ndarray | list[str]
    class_names: list[str]
    counts: np.ndarray
    prior: np.ndarray
    rates: np.ndarray

    @property
    def streamed(self) -> bool:
        return self.test.streamed


def run(cfg: config_lib.Config, strategy=None, log=print) -> results.Results:
    """Runs (or resumes) all generations; returns and writes WORKDIR/results.json.

    Under MultiWorkerMirroredStrategy every worker runs this in lockstep on the same
    data; the chief writes WORKDIR, each other worker its own copy of the run in
    WORKDIR/.worker_<i> (`workdir.worker_folder`), which it resumes from.
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
    worker = workdir.worker_folder(strategy)
    if worker:
        cfg = dataclasses.replace(cfg, workdir=os.path.join(cfg.workdir, worker))
    workdir.check_writable(cfg.workdir)
    with workdir.lock(cfg.workdir, log):
        workdir.check_args(cfg)
        data = load_data(cfg, log)
        # Written once every check has passed, so that a mistake does not lock the folder.
        workdir.write_args(cfg)
        if replicas > 1:
            workdir.check_workers_agree(cfg, strategy)
        log_setup(cfg, data, replicas, log)
        generations, labeled, prior = [], data.labeled, data.prior
        for g in range(cfg.generations):
            generation = finished_generation(cfg, g, data, log)
            if generation is None:
                generation = run_generation(cfg, g, labeled, prior, data, strategy, log)
            labeled = read_export(cfg, g, data)  # The next generation's labeled set.
            if generation.unlabeled_prior is not None:  # The next generation's base of DA.
                prior = np.asarray(generation.unlabeled_prior.estimate)
            log_generation(cfg, generation, data, log)
            gen_dir = workdir.generation_dir(cfg.workdir, g)
            if export.exported(gen_dir):  # Not in runs finished before exports existed.
                export.point_to(cfg.workdir, g, gen_dir)
            generations.append(generation)
        return finish(cfg, generations, data, log)


# --------------------------------------------------------------------------------------
# The run's steps.


def load_data(cfg: config_lib.Config, log) -> RunData:
    """The fold (made if missing), its splits in memory or streamed, the class prior and
    the sampling rates mu."""
    dataset = datasets.get(cfg.dataset)
    fold_dir = workdir.fold_dir(cfg.workdir)
    spec = config_lib.fold_spec(cfg)
    fold = folds.ensure_fold(dataset, spec, fold_dir, log)
    shape = folds.image_shape_of_fold(fold, dataset)
    decoded = _decoded_bytes(fold, folds.fold_splits(fold), shape)
    stream = cfg.stream == 'always' or (cfg.stream == 'auto' and decoded > IN_MEMORY_LIMIT)
    if not stream:
        try:
            machine.check_fits(
                decoded,
                f'--stream={cfg.stream}: holding the fold {fold_dir} in memory',
                ('--stream=always reads it from its files'),
            )
        except MemoryError as e:
            raise ValueError(str(e)) from None
    splits = {
        s: folds.read_split(fold_dir, s, fold, images=not stream) for s in folds.fold_splits(fold)
    }
    labeled, unlabeled, test, val = (splits.get(s) for s in (*folds.SPLITS, 'val'))
    names = fold['class_names']
    counts = np.bincount(labeled.labels, minlength=len(names))
    if np.any(counts == 0):
        empty = ', '.join(names[c] for c in np.flatnonzero(counts == 0))
        raise ValueError(f'{labeled.path}: no labeled example of class(es) {empty}')
    prior = _class_prior(cfg, counts)
    # The unlabeled stream is the whole long-tailed train set, labels unused.
    if stream:
        stream_images = [labeled.path, unlabeled.path]
        log(f'images streamed from {fold_dir} (--stream={cfg.stream})')
    else:
        stream_images = np.concatenate([labeled.images, unlabeled.images])
    log(
        f'{cfg.dataset} ({dataset.describe(spec)}): {len(labeled)} labeled, '
        f'{len(unlabeled)} unlabeled, {len(test)} test'
        + (f', {len(val)} val' if val is not None else '')
        + '; labeled per class: '
        + ', '.join(f'{n} {c}' for n, c in zip(names, counts.tolist(), strict=True))
    )
    return RunData(
        labeled,
        unlabeled,
        test,
        val,
        stream_images,
        names,
        counts,
        prior,
        rebalance.sampling_rates(prior, cfg.alpha),
    )


def log_setup(cfg: config_lib.Config, data: RunData, replicas: int, log) -> None:
    log(f'sampling rates mu: {np.round(data.rates, 3).tolist()}')
    log(
        f'{cfg.algorithm} {cfg.hparams}: {cfg.generations} generation(s) of '
        f'{cfg.steps_per_generation} steps, {cfg.batch_size} labeled + '
        f'{cfg.batch_size * cfg.uratio} unlabeled images per step'
        + (f', split over {replicas} replicas' if replicas > 1 else '')
    )


def finished_generation(cfg: config_lib.Config, g: int, data: RunData, log):
    """Generation g's numbers if it finished in an earlier run and its export is intact;
    None when it is to be run (again: a damaged export keeps its final checkpoint, so
    redoing it only pseudo-labels again)."""
    path = os.path.join(workdir.generation_dir(cfg.workdir, g), workdir.METRICS)
    if not tf.io.gfile.exists(path):
        return None
    generation = results.Generation.from_json(records.read_json(path), path)
    try:
        read_export(cfg, g, data)
    except records.DataError as e:
        log(f'{e}; redoing the pseudo-labels of generation {g}')
        return None
    log(
        f'[gen {g}/{cfg.generations - 1}] finished earlier, skipped: '
        f'balanced acc {generation.balanced_accuracy:.4f}'
    )
    return generation


def read_export(cfg: config_lib.Config, g: int, data: RunData) -> records.Records:
    """Generation g's exported labeled set, checked against its picks.json."""
    gen_dir = workdir.generation_dir(cfg.workdir, g)
    picks_path = os.path.join(gen_dir, workdir.PICKS)
    picks = results.Picks.from_json(records.read_json(picks_path), picks_path)
    path = os.path.join(gen_dir, workdir.EXPORT)
    return records.read_records(path, picks.export, picks_path, images=not data.streamed)


def log_generation(cfg, generation: results.Generation, data: RunData, log) -> None:
    recall, picks = generation.test.recall, generation.picks
    smallest = np.argsort(data.counts)[:3]
    log(
        f'[gen {generation.generation}/{cfg.generations - 1}] balanced acc '
        f'{generation.balanced_accuracy:.4f} (mean of last 5 evals; with logit adjustment '
        f'{generation.balanced_accuracy_la:.4f})  minority-class recall '
        f'{", ".join(f"{data.class_names[c]} {recall[c]:.3f}" for c in smallest)}  '
        f'picks {picks.total_picked}'
        + (f' ({picks.total_precision:.1%} correct)' if picks.total_precision is not None else '')
    )


def finish(cfg, generations: list[results.Generation], data: RunData, log) -> results.Results:
    """Writes results.json, says where the model is and how biased generation 0 is on
    its minority classes."""
    run_results = results.Results(
        args=config_lib.saved_settings(cfg),
        class_names=data.class_names,
        labeled_counts=data.counts.tolist(),
        sampling_rates=np.round(data.rates, 6).tolist(),
        balanced_accuracy=generations[-1].balanced_accuracy,
        balanced_accuracy_la=generations[-1].balanced_accuracy_la,
        generations=generations,
    )
    records.write_json(os.path.join(cfg.workdir, workdir.RESULTS), run_results.to_json())
    pointer = os.path.join(cfg.workdir, export.POINTER)
    if tf.io.gfile.exists(pointer):
        log(
            f'its model: {os.path.join(cfg.workdir, records.read_json(pointer)["keras"])}; '
            f'classify images: python scripts/predict.py --model={cfg.workdir} --images=FOLDER'
        )
    split = 'unlabeled' if generations[0].unlabeled else 'test'
    bias = run_results.minority_bias(split, generation=0)
    precision = bias['minority_precision']
    log(
        f'generation 0 on the {split} set, minority half of the classes: precision '
        f'{"undefined (never predicted)" if precision is None else f"{precision:.1%}"}, '
        f'recall {bias["minority_recall"]:.1%}; will class-rebalancing pay off? '
        f'python scripts/diagnose.py --run={cfg.workdir}'
    )
    return run_results


# --------------------------------------------------------------------------------------
# A generation's steps.


def run_generation(
    cfg: config_lib.Config,
    g: int,
    labeled: records.Records,
    prior: np.ndarray,
    data: RunData,
    strategy,
    log,
) -> results.Generation:
    """Trains generation g on `labeled` (aligning, with CReST+, to a target flattened
    from `prior`), then pseudo-labels, picks and exports; writes and returns its
    numbers."""
    gen_dir = workdir.generation_dir(cfg.workdir, g)
    tf.io.gfile.makedirs(gen_dir)
    # Redone (its export was damaged): unfinished until its files are all written again.
    metrics_path = os.path.join(gen_dir, workdir.METRICS)
    if tf.io.gfile.exists(metrics_path):
        tf.io.gfile.remove(metrics_path)
    # The class distribution of this generation's labeled set (picks included): the
    # prior of logit adjustment and the counts of class-balanced weights.
    labeled_counts = np.bincount(labeled.labels, minlength=len(data.rates))
    la_prior = labeled_counts / labeled_counts.sum()
    t, p_target = alignment(cfg, g, prior)
    # Every random draw of the generation follows this seed: the model's initialisation,
    # the data stream's orders and augmentations, the train step's own draws.
    seed = cfg.seed * 1000 + g
    keras.utils.set_random_seed(seed)
    model = build_model(cfg, data, labeled_counts, p_target, seed, strategy)
    prefix = f'[gen {g}/{cfg.generations - 1}] '
    log(
        f'{prefix}labeled {len(labeled)} ({int(labeled.pseudo.sum())} pseudo-labeled), '
        f'DA {"off" if p_target is None else f"t={t:.2f}"}'
    )
    start = time.time()
    evals, probs_test = train_model(
        cfg, model, labeled, data, la_prior, seed, strategy, gen_dir, log, prefix
    )
    # The final model's test probabilities, from which every test number can be redone.
    records.write_array(os.path.join(gen_dir, 'test_probs.npy'), probs_test)
    predicted, picks_info, probs = pseudo_label_and_export(cfg, model, data, seed, gen_dir)
    estimate = None
    if probs is not None:
        estimate = estimate_unlabeled_prior(probs, la_prior, data)
        log(f'{prefix}{describe_estimate(estimate)}')
    generation = results.Generation(
        generation=g,
        temperature=None if p_target is None else t,
        labeled_size=len(labeled),
        balanced_accuracy=metrics.mean_of_last([e['acc/balanced'] for e in evals]),
        evals=[results.Eval(e['step'], e['acc/balanced']) for e in evals],
        balanced_accuracy_la=metrics.mean_of_last([e['acc/balanced_la'] for e in evals]),
        test=test_report(evals, la_prior),
        unlabeled=_known_report(data.unlabeled.labels, predicted, len(data.rates)),
        picks=picks_info,
        seconds=round(time.time() - start, 1),
        balanced_accuracy_val=metrics.mean_of_last([e['acc/balanced_val'] for e in evals])
        if data.val is not None
        else None,
        unlabeled_prior=estimate,
    )
    summaries.write_generation(
        os.path.join(gen_dir, 'tb'), cfg, generation, data.class_names, data.test.labels, probs_test
    )
    # Before metrics.json: a finished generation has its model exported.
    export.export_generation(
        gen_dir,
        model.ema_net,
        data.class_names,
        data.counts,
        labeled_counts,
        la_prior,
        dict(generation=g, dataset=cfg.dataset, arch=cfg.arch, precision=cfg.precision),
    )
    records.write_json(metrics_path, generation.to_json())
    return generation


def alignment(cfg: config_lib.Config, g: int, prior: np.ndarray):
    """(t, p_target) of generation g: the temperature and the alignment target
    Normalize(p(y)^t), None without alignment (paper eq. 2 for CReST+)."""
    t = rebalance.temperature(g, cfg.generations, cfg.t_min)
    if cfg.dist_align == 'none':
        return t, None
    t = t if cfg.dist_align == 'progressive' else cfg.t_min
    return t, rebalance.alignment_target(prior, t)


def build_model(cfg, data: RunData, labeled_counts, p_target, seed: int, strategy):
    """A fresh model of the algorithm, compiled with its optimizer."""
    image_shape = (
        records.image_shape_of(data.test.path) if data.streamed else data.test.images.shape[1:]
    )
    num_classes = len(data.rates)
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
    return model


def train_model(cfg, model, labeled, data: RunData, la_prior, seed, strategy, gen_dir, log, prefix):
    """Trains `model` (resuming from the generation's last checkpoint); returns its
    evaluations and the final EMA model's test probabilities."""
    # The global batch, split across the replicas inside the train step.
    stream = pipeline.train_dataset(
        labeled,
        data.stream_images,
        cfg.batch_size,
        cfg.uratio,
        model.views,
        seed=seed,
        resample=cfg.resample,
    )
    latest = {}  # The last evaluation's test probabilities.

    def evaluate():
        latest['probs'] = train.predict(model.ema_net, pipeline.image_batches(data.test))
        report = metrics.classification_report(data.test.labels, latest['probs'])
        adjusted = metrics.classification_report(
            data.test.labels, metrics.logit_adjusted(latest['probs'], la_prior)
        )
        numbers = {
            'acc/balanced': report['balanced_accuracy'],
            'recall': report['recall'],
            'precision': report['precision'],
            'predicted': report['predicted'],
            'acc/balanced_la': adjusted['balanced_accuracy'],
            'recall_la': adjusted['recall'],
        }
        if data.val is not None:
            on_val = metrics.classification_report(
                data.val.labels, train.predict(model.ema_net, pipeline.image_batches(data.val))
            )
            numbers['acc/balanced_val'] = on_val['balanced_accuracy']
        return numbers

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
        describe=lambda numbers: f'balanced acc {numbers["acc/balanced"]:.4f}',
        class_names=data.class_names,
    )
    probs_test = latest.get('probs')
    if probs_test is None:  # Trained before a restart: the restored EMA model is final.
        probs_test = train.predict(model.ema_net, pipeline.image_batches(data.test))
    return evals, probs_test


def pseudo_label_and_export(cfg, model, data: RunData, seed: int, gen_dir: str):
    """Pseudo-labels the unlabeled pool (EMA model, no augmentation, raw softmax; each
    image's predicted class and its probability only), keeps per predicted class the
    most confident floor(n_c * mu_c), exports the original labeled set with them and
    writes picks.json. Returns the predicted classes, the picks' record and, for
    --unlabeled_prior=estimated, all the probabilities (N x L held at once), else None."""
    probs = None
    if cfg.unlabeled_prior == 'estimated':
        probs = train.predict(model.ema_net, pipeline.image_batches(data.unlabeled))
        predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    else:
        predicted, confidence = train.predict_classes(
            model.ema_net, pipeline.image_batches(data.unlabeled)
        )
    picks = rebalance.select_by_confidence(predicted, confidence, data.rates)
    export_path = os.path.join(gen_dir, workdir.EXPORT)
    if data.streamed:
        exported = records.export_streamed(
            export_path,
            data.labeled,
            data.unlabeled,
            picks,
            predicted[picks],
            confidence[picks],
            seed,
        )
    else:
        picked = data.unlabeled.take(picks)
        picked.labels = predicted[picks]
        picked.pseudo = np.ones(len(picks), np.int64)
        picked.confidence = confidence[picks].astype(np.float32)
        exported = records.write_records(
            export_path, records.Records.concat([data.labeled, picked])
        )
    # What the export holds, checked by whoever reads it.
    picks_info = pick_summary(data.unlabeled, picks, predicted, data.rates, exported)
    records.write_json(os.path.join(gen_dir, workdir.PICKS), picks_info.to_json())
    return predicted, picks_info, probs


def estimate_unlabeled_prior(probs: np.ndarray, la_prior, data: RunData) -> results.PriorEstimate:
    """The unlabeled set's class distribution by EM from the EMA model's predictions
    `probs`, the model trained under its generation's labeled distribution `la_prior`;
    with its errors when every unlabeled image's class is known."""
    estimate = np.round(rebalance.em_prior(probs, la_prior), 6)
    labels = data.unlabeled.labels
    if not len(labels) or np.any(labels < 0):
        return results.PriorEstimate(estimate.tolist(), None, None, None)
    truth = np.bincount(labels, minlength=len(estimate)) / len(labels)

    def error(p):
        return round(float(np.abs(np.asarray(p) - truth).sum()), 6)

    return results.PriorEstimate(
        estimate.tolist(), error(estimate), error(probs.mean(axis=0)), error(la_prior)
    )


def describe_estimate(estimate: results.PriorEstimate) -> str:
    said = f'unlabeled class distribution by EM: {np.round(estimate.estimate, 3).tolist()}'
    if estimate.error is None:
        return said
    return (
        f'{said}; L1 error {estimate.error:.3f} (mean prediction '
        f'{estimate.error_of_predictions:.3f}, labeled distribution '
        f'{estimate.error_of_labeled:.3f})'
    )


def test_report(evals: list[dict], la_prior) -> results.TestReport:
    """Test numbers: means over the last 5 evaluations, as the paper reports them, and
    the last one; `_la`: after post-hoc logit adjustment by the labeled class
    distribution (tau = 1)."""

    def last(key):
        return metrics.mean_of_last([e[key] for e in evals])

    return results.TestReport(
        balanced_accuracy=last('acc/balanced'),
        recall=last('recall'),
        precision=last('precision'),
        predicted=last('predicted'),
        final_balanced_accuracy=evals[-1]['acc/balanced'],
        balanced_accuracy_la=last('acc/balanced_la'),
        recall_la=last('recall_la'),
        final_balanced_accuracy_la=evals[-1]['acc/balanced_la'],
        la_prior=np.round(la_prior, 6).tolist(),
    )


def pick_summary(unlabeled, picks: np.ndarray, predicted, rates, export=None) -> results.Picks:
    """Per-class counts of the picks by predicted class, all of them; their precision and
    recall are counted over the picks whose true class is known (all but some of the
    user's own), whose counts are `picked_known` when some are not known."""
    num_classes = len(rates)
    true, pred = unlabeled.labels[picks], predicted[picks]
    known = true >= 0
    picked = np.bincount(pred, minlength=num_classes)
    picked_known = np.bincount(pred[known], minlength=num_classes)
    correct = np.bincount(pred[true == pred], minlength=num_classes)
    pool = np.bincount(unlabeled.labels[unlabeled.labels >= 0], minlength=num_classes)
    checkable = bool(np.any(unlabeled.labels >= 0))  # Else nothing to check against.
    return results.Picks(
        rate=np.round(rates, 6).tolist(),
        predicted=np.bincount(predicted, minlength=num_classes).tolist(),
        picked=picked.tolist(),
        correct=correct.tolist() if checkable else None,
        precision=np.round(
            np.divide(correct, picked_known, out=np.zeros(num_classes), where=picked_known > 0),
            6,
        ).tolist()
        if checkable
        else None,
        recall=np.round(
            np.divide(correct, pool, out=np.zeros(num_classes), where=pool > 0), 6
        ).tolist()
        if checkable
        else None,
        total_picked=len(picks),
        total_precision=float(correct.sum() / max(picked_known.sum(), 1)) if checkable else None,
        # Picks no label checks.
        unknown_class=None if known.all() else int(len(picks) - known.sum()),
        picked_known=picked_known.tolist() if checkable and not known.all() else None,
        export=export,
    )


def _known_report(labels, predicted, num_classes) -> results.Report | None:
    """The prediction report of the images whose class is known; None if none is."""
    known = labels >= 0
    if not known.any():
        return None
    return results.Report(**metrics.prediction_report(labels[known], predicted[known], num_classes))


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
