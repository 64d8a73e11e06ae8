"""The training job: prepare → stages → finished run directory.

:func:`train` is what ``skinzoo train`` runs. It prepares the run (:mod:`skinzoo.train.prepare`),
runs the stages in order (the head on cached embeddings, :mod:`skinzoo.train.two_stage`; end to end
or fine-tuning, here), both built from :mod:`skinzoo.train.parts`, and leaves a complete run
directory behind.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
import warnings
from dataclasses import dataclass

import pandas as pd

from skinzoo.config import TrainConfig
from skinzoo.data.balance import SMOTE_METHODS
from skinzoo.fileio import read_json, write_json_atomic
from skinzoo.metrics import as_class_probs, classification_metrics, collapse_check
from skinzoo.rundir import RunDir
from skinzoo.train.abort import AbortState
from skinzoo.train.keras_compat import multi_worker_fit
from skinzoo.train.parts import (
    build_for_training,
    make_loss,
    make_optimizer,
    raise_if_aborted,
    require_shared_head,
    standard_callbacks,
    train_datasets,
    training_loss,
)
from skinzoo.train.prepare import Prepared, prepare, start_lines
from skinzoo.train.run import RunLock, naming_unreadable_images
from skinzoo.train.two_stage import train_head


@dataclass
class TrainResult:
    run: RunDir
    best_epoch: int | None
    best_value: float | None
    monitor: str
    val_metrics: dict
    seconds: float
    stages: list[str]


# --- the job --------------------------------------------------------------------------------

def train(config: TrainConfig, run: RunDir | None = None, echo=print) -> TrainResult:
    """Run a full training job and return where everything is."""
    started = time.time()
    p = prepare(config, run, echo)
    # One training per run directory: a second `--resume` of a running run is refused.
    lock = RunLock(p.run).acquire(echo) if p.strategy.is_chief else None
    try:
        return _run_stages(p, started, echo)
    except BaseException:
        if run is None and p.strategy.is_chief and not p.run.history.exists():
            shutil.rmtree(p.run.path, ignore_errors=True)  # failed before any epoch: nothing to keep
        raise
    finally:
        if lock is not None:
            lock.release()
        if run is None and not p.strategy.is_chief:  # a non-chief's own scratch run, never a resumed one
            shutil.rmtree(p.run.path, ignore_errors=True)


def _run_stages(p: Prepared, started: float, echo) -> TrainResult:
    import keras

    from skinzoo.train.strategy import precision_policy

    c = p.config
    policy = precision_policy(c.precision, p.strategy)
    keras.mixed_precision.set_global_policy(policy)
    abort = AbortState()  # set by the callbacks that stop a stage; a set state ends the job
    try:
        stages = resolve_stages(p)
        if c.overfit_batch:
            return overfit_one_batch(p, echo)
        model = None
        # A resumed two-stage run was interrupted while fine-tuning: the head is already in it.
        if "head" in stages and not (p.resumed_from and "finetune" in stages):
            model = train_head(p, abort, echo)
        if "end-to-end" in stages or "finetune" in stages:
            model = fit_end_to_end(p, abort, echo, model=model, finetune="finetune" in stages)
        return finish(p, model, stages, started, echo)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def resolve_stages(p: Prepared) -> list[str]:
    """``auto``: from pretrained weights, head on cached embeddings, then fine-tune the top
    (the standard recipe: a random head's gradients would wreck the pretrained features);
    from random weights, train end to end. Explicit stages need a model with an ``embedding``."""
    stages = p.config.stages
    if stages == "auto":
        return ["head", "finetune"] if p.weights else ["end-to-end"]
    return {"head": ["head"], "finetune": ["finetune"], "both": ["head", "finetune"],
            "end-to-end": ["end-to-end"]}[stages]


def fit_end_to_end(p: Prepared, abort: AbortState, echo, model=None, finetune: bool = False):
    """Train the whole model (or fine-tune the top of a transfer model) on the image pipeline."""
    from skinzoo.train.metrics import monitor_mode, training_metrics
    from skinzoo.train.schedules import make_schedule

    c = p.config
    k = len(p.classes)
    epochs = (c.finetune_epochs or c.epochs) if finetune else c.epochs
    lr = (c.finetune_lr or p.lr / 10) if finetune else p.lr
    offset = count_history_rows(p.run, stage="head") if finetune else 0
    # Fine-tuning after a head trained on SMOTE'd embeddings uses a class-weighted loss: SMOTE on
    # full-size pixels is neither meaningful nor affordable.
    smote_family = c.balance in SMOTE_METHODS
    train_ds, val_ds, steps = train_datasets(p, balance_mode="class-weight" if finetune and smote_family else None)
    with p.strategy.strategy.scope():
        if model is None:
            model = build_for_training(p, k)
            if finetune:
                require_shared_head(model, p)
                from skinzoo.models.transfer import freeze_backbone

                freeze_backbone(model)
        if finetune:
            from skinzoo.models.transfer import unfreeze_top

            unfreeze_top(model, n_blocks=c.finetune_blocks)
        schedule = make_schedule(c.schedule, lr, steps, epochs, c.warmup_epochs)
        model.compile(optimizer=make_optimizer(c, schedule), loss=training_loss(p),
                      metrics=training_metrics(k))
    for line in start_lines(p, model, steps):
        echo(line)
    resumed = p.resumed_from  # read from the backup once, in prepare()
    if resumed >= epochs:
        echo(f"this run already finished its {epochs} epochs; nothing to resume")
        if p.run.best_model.exists():
            # Every epoch ran but the run stopped before finishing (e.g. killed during the final
            # validation): its model is best.keras, not the one just built with fresh weights,
            # whose validation metrics would be written as the run's.
            with warnings.catch_warnings():  # Keras: "skipping optimizer variables", irrelevant here
                warnings.simplefilter("ignore")
                model.load_weights(p.run.best_model)
        return model
    callbacks = standard_callbacks(p, abort, epochs, monitor_mode(c.monitor), offset, resumed,
                                   stage="finetune" if finetune else None, echo=echo)
    # Keras workarounds for multi-worker fit, live only during this fit (train/keras_compat.py)
    workarounds = multi_worker_fit(model, train_ds, p.strategy.strategy) \
        if p.strategy.kind == "multi-worker" else contextlib.nullcontext()
    # A file that fails to read mid-epoch (changed or removed since the check) is named.
    with naming_unreadable_images(p.subset("train")[0] + p.subset("val")[0], p.run), workarounds:
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps,
                  callbacks=callbacks, verbose=0, shuffle=False)  # the dataset shuffles itself
    raise_if_aborted(abort, p, lr)
    return model


def count_history_rows(run: RunDir, stage: str | None = None) -> int:
    if not run.history.exists():
        return 0
    history = pd.read_csv(run.history)
    if stage and "stage" in history:
        return int((history["stage"] == stage).sum())
    return len(history)


def finish(p: Prepared, model, stages, started, echo) -> TrainResult:
    """Best model in place, validation metrics, curves, summary; backups removed."""
    from skinzoo.models.files import save_model_atomic

    run = p.run
    state = read_json(run.state, f"resume the run to rewrite it: skinzoo train --resume {run.path}") \
        if run.state.exists() else {}
    if p.strategy.is_chief and not run.best_model.exists():
        save_model_atomic(model, run.best_model)
    val_metrics = validation_metrics(p, model)
    if p.strategy.is_chief:
        write_json_atomic(run.metrics, val_metrics)
        if run.history.exists():
            from skinzoo.train.curves import plot_history

            plot_history(pd.read_csv(run.history), run.curves)
        shutil.rmtree(run.backup, ignore_errors=True)
        run.state.unlink(missing_ok=True)  # resume state: gone once the run has finished
    seconds = time.time() - started
    best_epoch = state.get("best_epoch")
    result = TrainResult(run, best_epoch, state.get("best"), p.config.monitor, val_metrics, seconds, stages)
    if not p.strategy.is_chief:
        echo(f"worker {p.strategy.worker_index} done in {seconds / 60:.1f} min; the chief (worker 0) "
             "wrote the run directory")
        return result
    for line in final_lines(result):
        echo(line)
    return result


def validation_metrics(p: Prepared, model) -> dict:
    from skinzoo.data.pipeline import make_dataset

    paths, labels = p.subset("val")
    ds = make_dataset(paths, None, len(p.classes), p.img_size, p.global_batch, training=False,
                      resize=p.config.resize, hair_removal=p.config.hair_removal,
                      metadata=p.metadata_of("val"))
    probs = as_class_probs(model.predict(ds, verbose=0))
    metrics = classification_metrics(labels, probs, p.classes)
    metrics["collapse_warnings"] = collapse_check(labels, probs.argmax(1), len(p.classes), p.classes)
    metrics["split"] = "val"
    return metrics


def final_lines(r: TrainResult) -> list[str]:
    m = r.val_metrics
    lines = [f"done in {r.seconds / 60:.1f} min"]
    if r.best_epoch is not None:
        lines.append(f"best epoch: {r.best_epoch + 1} ({r.monitor} = {r.best_value:.4f})")
    headline = [f"{k} {m[k]:.3f}" for k in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")
                if isinstance(m.get(k), int | float) and not math.isnan(m[k])]
    lines.append("validation: " + ", ".join(headline))
    for warning in m.get("collapse_warnings", []):
        lines.append(f"WARNING: {warning}")
    lines.append(f"run directory: {r.run.path}  (best.keras, history.csv, curves.png, metrics.json)")
    lines.append(f"next: skinzoo evaluate {r.run.path} --report")
    return lines


def overfit_one_batch(p: Prepared, echo, steps: int = 150) -> TrainResult:
    """Capacity check: can the model drive the loss on a single batch to near zero?"""
    import keras

    from skinzoo.data.pipeline import make_dataset
    from skinzoo.train.metrics import training_metrics

    paths, labels = p.subset("train")
    k = len(p.classes)
    batch = min(p.batch_size, len(paths))
    meta = p.metadata_of("train")
    ds = make_dataset(paths[:batch], labels[:batch], k, p.img_size, batch, training=False,
                      resize=p.config.resize, metadata=None if meta is None else meta[:batch])
    x, y = next(iter(ds))
    model = build_for_training(p, k)
    model.compile(optimizer=keras.optimizers.Adam(max(p.lr, 1e-3)), loss=make_loss(k),
                  metrics=training_metrics(k)[:1])
    history = model.fit(x, y, epochs=steps, batch_size=batch, verbose=0, shuffle=False)
    first, last = history.history["loss"][0], history.history["loss"][-1]
    accuracy = history.history["accuracy"][-1]
    ok = last < 0.05 or accuracy == 1.0
    echo(f"overfit check on one batch of {batch}: loss {first:.3f} -> {last:.4f}, accuracy {accuracy:.2f} "
         f"after {steps} steps: {'PASSED (the model can fit)' if ok else 'FAILED (check labels, lr, model)'}")
    shutil.rmtree(p.run.path, ignore_errors=True)
    return TrainResult(p.run, None, last, "loss", {"overfit_passed": ok, "final_loss": last}, 0.0,
                       ["overfit-batch"])
