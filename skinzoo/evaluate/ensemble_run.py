"""`skinzoo ensemble`: load the members, optionally fit their weights on the validation split,
build one Keras model (:mod:`skinzoo.models.ensemble`) and write it.

Output: a ``.keras`` file, or (any other ``--out``) a run-like directory that every command
reads like a training run: ``best.keras``, ``classes.json`` (``model: "ensemble"``),
``ensemble.json`` (members, weights, mean, where the weights were fitted), and, when the members
share one split, that ``split.csv`` (plus ``metadata.json``/``metadata.csv`` for metadata
members), so ``skinzoo evaluate DIR`` scores it on the same test split as its members and
``skinzoo compare`` lists it beside them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from skinzoo.data.metadata import METADATA_FILE, METADATA_VALUES_FILE
from skinzoo.errors import UsageError
from skinzoo.fileio import write_json_atomic
from skinzoo.models.files import load_model_file, save_model_atomic
from skinzoo.rundir import RunDir, require_snapshots

ENSEMBLE_FILE = "ensemble.json"


@dataclass
class EnsembleResult:
    path: Path  # the .keras file written
    run: Path | None  # the run-like directory, when one was written
    weights: list[float]
    names: list[str]
    notes: list[str] = field(default_factory=list)
    validation: dict = field(default_factory=dict)  # balanced accuracy per member and ensemble


def make_ensemble(specs, out, weights=None, mean: str = "arithmetic", classes=None,
                  unsafe: bool = False, batch_size: int = 32, snapshots: bool = False) -> EnsembleResult:
    """Build and write the ensemble of ``specs`` (run directories or model files).

    ``weights``: None (equal), a list, or ``"val"`` to fit them on the validation split the
    members share (refused when they do not share one: fitting on another member's training
    images would flatter it). ``snapshots``: each spec is a run whose ``snapshots/`` (``skinzoo
    train --snapshots K``) become the members, instead of the run's best model.
    """
    from skinzoo.evaluate.predict import resolve_model
    from skinzoo.models.ensemble import Member, build_ensemble, check_members, check_weights

    out = Path(out)
    if snapshots:
        loaded, names = load_snapshot_members(specs, unsafe)
    else:
        loaded = [resolve_model(s, classes=classes, unsafe=unsafe) for s in specs]
        names = _unique([m.name for m in loaded])
    members = [Member(m.model, n, list(m.classes), m.task, tuple(m.img_size), m.resize,
                      m.temperature, dict(m.metadata)) for m, n in zip(loaded, names, strict=True)]
    notes = check_members(members)
    split_run = shared_split_run(loaded)
    validation = {}
    if weights == "val":
        require_shared_split(loaded, names)
        weights, validation = fit_on_validation(loaded, names, mean, batch_size)
    weights = check_weights(weights, len(members))
    model = build_ensemble(members, weights, mean, name="ensemble")
    if out.suffix.lower() in (".keras",):
        save_model_atomic(model, out)
        return EnsembleResult(out, None, weights, names, notes, validation)
    run = _write_run_dir(out, model, loaded, names, weights, mean, split_run, validation, snapshots)
    return EnsembleResult(run / "best.keras", run, weights, names, notes, validation)


def load_snapshot_members(specs, unsafe: bool = False) -> tuple[list, list[str]]:
    """One member per snapshot of each run in ``specs``, with the run's classes, input size,
    metadata and split (so validation weights and evaluation use the run's own split). Named
    ``epoch_NNN@RUN``. No calibration temperature: the run's ``calibration.json`` was fitted for
    its best model, not for these epochs."""
    from skinzoo.evaluate.predict import resolve_model

    loaded, names = [], []
    for spec in specs:
        path = Path(spec)
        if not path.is_dir():
            raise UsageError(f"--snapshots takes run directories; {path} is a file",
                             "pass the run folder trained with --snapshots K (e.g. runs/NAME)")
        files = require_snapshots(path)
        base = resolve_model(path, unsafe=unsafe)
        for f in files:
            loaded.append(replace(base, model=load_model_file(f, unsafe=unsafe), source=f,
                                  temperature=1.0, threshold=None, notes=[]))
            names.append(f"{f.stem}@{path.name}")
    return loaded, _unique(names)


def _unique(names) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def shared_split_run(loaded):
    """The run of the first member when every member is a run with the same split, else None."""
    from skinzoo.evaluate.evaluation import split_digest

    runs = [m.run for m in loaded]
    if any(r is None or not r.split.exists() for r in runs):
        return None
    digests = {split_digest(r) for r in runs}
    return runs[0] if len(digests) == 1 else None


def require_shared_split(loaded, names) -> None:
    """Refuse fitting weights unless every member is a run directory with the same split.csv,
    saying which member is the problem."""
    from skinzoo.evaluate.evaluation import split_digest

    bare = [str(m.source) for m in loaded if m.run is None or not m.run.split.exists()]
    if bare:
        raise UsageError("fitting weights needs each member's validation split, but "
                         + ", ".join(bare) + (" is a model file" if len(bare) == 1 else " are model files")
                         + " without a run directory (no split.csv beside it): no shared split to fit on",
                         "pass the members' run directories (runs/NAME, trained on one split), "
                         "or give the weights yourself: --weights W1,W2,...")
    digests = {}
    for n, m in zip(names, loaded, strict=True):
        digests.setdefault(split_digest(m.run), []).append(n)
    if len(digests) > 1:
        groups = "; ".join(", ".join(v) for v in digests.values())
        raise UsageError("fitting weights needs members trained on one shared split, but their "
                         f"split.csv differ ({groups}): one member's validation images may be "
                         "another's training images, which would flatter it",
                         f"train the members with --split-file {loaded[0].run.split}, "
                         "or give the weights yourself: --weights W1,W2,...")


def fit_on_validation(loaded, names, mean, batch_size) -> tuple[list[float], dict]:
    """Weights fitted on the shared VALIDATION split; and each member's and the ensemble's
    validation balanced accuracy (equal and fitted weights) to show what they changed."""
    from skinzoo.evaluate.calibration import apply_temperature
    from skinzoo.evaluate.predict import eval_table, predict_paths, select_split
    from skinzoo.metrics import classification_metrics
    from skinzoo.models.ensemble import combine, fit_weights

    probs, y, paths = [], None, None
    for m in loaded:
        table, source = eval_table(m)  # also reads the member's own metadata.csv
        val = select_split(table, source, m.classes, "val")
        views, ok, errors = predict_paths(m, val.paths, batch_size)
        if errors:
            raise UsageError(f"{len(errors)} validation image(s) could not be read for {m.name}",
                             "run `skinzoo data check` on the dataset")
        if paths is not None and ok != paths:
            raise UsageError("the members' validation images differ", "use members of one split")
        paths, y = ok, val.labels
        probs.append(apply_temperature(views.mean(axis=0), m.temperature))
    fitted = fit_weights(probs, y, mean)
    classes = loaded[0].classes

    def bal(p):
        return float(classification_metrics(y, p, classes)["balanced_accuracy"])

    report = {name: bal(p) for name, p in zip(names, probs, strict=True)}
    report["ensemble (equal weights)"] = bal(combine(probs, [1.0] * len(probs), mean))
    report["ensemble (fitted weights)"] = bal(combine(probs, fitted, mean))
    report["log_loss"] = {"equal": log_loss(combine(probs, [1.0] * len(probs), mean), y),
                          "fitted": log_loss(combine(probs, fitted, mean), y)}
    report["n_val"] = len(y)
    return fitted, report


def log_loss(probs, y) -> float:
    """Mean negative log probability of the true class (what :func:`fit_weights` minimises)."""
    p = np.asarray(probs, np.float64)[np.arange(len(y)), np.asarray(y, int)]
    return float(-np.mean(np.log(np.clip(p, 1e-7, 1.0))))


def _write_run_dir(out: Path, model, loaded, names, weights, mean, split_run, validation,
                   snapshots: bool = False) -> Path:
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} already exists and is not empty",
                         "choose a new --out folder, or --out NAME.keras for a single file")
    out.mkdir(parents=True, exist_ok=True)
    run = RunDir(out)
    h, w = (int(s) for s in model.inputs[0].shape[1:3])
    first = loaded[0]
    run.write_info({"classes": list(first.classes), "task": first.task, "model": "ensemble",
                    "img_size": h if h == w else [h, w], "resize": first.resize,
                    "members": names})
    if split_run is not None:
        shutil.copyfile(split_run.split, run.split)
        meta_run = next((m.run for m in loaded if m.metadata and m.run is not None
                         and (m.run.path / METADATA_VALUES_FILE).exists()), None)
        if meta_run is not None:
            for name in (METADATA_FILE, METADATA_VALUES_FILE):
                shutil.copyfile(meta_run.path / name, out / name)
    write_json_atomic(out / ENSEMBLE_FILE, {
        "members": [{"name": n, "source": str(m.source), "img_size": list(m.img_size),
                     "temperature": m.temperature, "metadata": bool(m.metadata)}
                    for n, m in zip(names, loaded, strict=True)],
        "weights": list(weights), "mean": mean, "from_snapshots": bool(snapshots),
        "weights_fitted_on": "val" if validation else None, "validation": validation})
    save_model_atomic(model, run.best_model)
    return out



# --- Grad-CAM of an ensemble -------------------------------------------------------------------

def member_cam_paths(model) -> list[list[str]]:
    """For an ensemble model: each member's Grad-CAM layer path (``[member, layer...]``);
    ``[]`` for any other model."""
    from skinzoo.evaluate.gradcam import find_target_layer
    from skinzoo.models.ensemble import ProbabilityMean
    from skinzoo.models.layers import keras

    if not any(isinstance(layer, ProbabilityMean) for layer in model.layers):
        return []
    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return [[m.name, *find_target_layer(m)] for m in members]


def ensemble_heatmaps(model, inputs, class_index, view_hw, method="gradcam", batch_size=16):
    """``(per member [(N, H, W)], averaged (N, H, W))``: each member's Grad-CAM of the ensemble's
    output for ``class_index``, upsampled to ``view_hw`` and scaled to [0, 1] per image, and their
    mean weighted by the ensemble weights."""
    from skinzoo.evaluate.gradcam import GradCam, upsample
    from skinzoo.models.ensemble import ProbabilityMean

    mean_layer = next(layer for layer in model.layers if isinstance(layer, ProbabilityMean))
    weights = mean_layer.member_weights
    per_member = []
    for path in member_cam_paths(model):
        result = GradCam(model, layer="/".join(path), method=method).explain(
            inputs, class_index, batch_size=batch_size)
        per_member.append(np.stack([upsample(h, view_hw) for h in result.heatmaps]))
    averaged = sum(w * m for w, m in zip(weights, per_member, strict=True)) / sum(weights)
    return per_member, averaged
