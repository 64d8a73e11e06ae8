"""`skinzoo evaluate | predict | gradcam | calibrate | compare`.

Where results go: ``evaluate`` on a run writes ``RUN/eval/<split>/metrics.json`` (other data:
``RUN/eval/<split>-<data folder name>/``), which ``compare`` reads; ``--report`` adds the full
report folder (default ``RUN/eval/<split>/report``, or ``./report-<model>`` for a model file).

``predict`` exit code: 0 when at least one image was predicted (bad files get an ``error:``
line on stderr and the rest still run); 3 (DataError) only when nothing could be predicted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from skinzoo_cli.ranges import AutoOr, click_type
from skinzoo_cli.settings import pass_settings

from skinzoo.errors import DataError, UsageError
from skinzoo.evaluate.gradcam import METHODS as GRADCAM_METHODS
from skinzoo.ranges import BATCH_SIZE, BOOTSTRAP, TOP_K, TTA_VIEWS


def _load(target, classes=None, unsafe=False, calibrated=True):
    from skinzoo.evaluate.predict import resolve_model

    loaded = resolve_model(target, classes=classes, unsafe=unsafe, calibrated=calibrated)
    for note in loaded.notes:
        click.echo(f"note: {note}", err=True)
    return loaded


def _meta(loaded, text, per_image_source=False):
    from skinzoo.evaluate.exported import ExportedModel, meta_for_export
    from skinzoo.evaluate.meta_inputs import meta_for_command

    parse = meta_for_export if isinstance(loaded.model, ExportedModel) else meta_for_command
    meta, notes = parse(loaded, text, per_image_source)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    return meta


def _threshold_option(value):
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter("use auto or a number such as 0.3") from None


# evaluate, predict and calibrate share it: auto = the run's choice on validation (RUN/tta.json)
TTA_OPTION = dict(type=AutoOr(click_type(TTA_VIEWS)), default="auto", show_default=True,
                  help="Test-time augmentation views, 1-8 (dihedral flips/turns); auto = the number "
                       "chosen on the run's validation split (RUN/tta.json), 1 for a bare model file.")


# --- evaluate ----------------------------------------------------------------------------------


@click.command()
@click.argument("target", required=False, type=click.Path())
@click.option("--data", type=click.Path(), default=None, help="Dataset to evaluate on (default: the run's split.csv).")
@click.option("--split", type=click.Choice(["test", "val", "all"]), default=None,
              help="Which split (default: test when known, else all).")
@click.option("--report", "report", is_flag=False, flag_value="", default=None, metavar="[DIR]",
              help="Write a report folder (default DIR: RUN/eval/<split>/report).")
@click.option("--tta", **TTA_OPTION)
@click.option("--threshold", default="auto", show_default=True,
              help="Binary decision threshold: auto (fitted on validation) or a value.")
@click.option("--target-sensitivity", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Binary: lowest false-positive threshold reaching this validation sensitivity.")
@click.option("--classes", default=None, help="Class names in training order, comma-separated.")
@click.option("--meta", default=None, help="Metadata for every image: field=value,... (a model trained "
              "with --metadata; default: each image's own values; 'none' = metadata absent) or "
              "input=v1:v2:... (raw inputs).")
@click.option("--meta-encoding", "meta_encoding", default=None, metavar="[INPUT=]FILE.json",
              help="A model you did not train: how its metadata input is made from the dataset's "
                   "columns (metadata.json format).")
@click.option("--batch-size", type=click_type(BATCH_SIZE), default=32, show_default=True)
@click.option("--bootstrap", "n_bootstrap", type=click_type(BOOTSTRAP), default=1000, show_default=True,
              help="Bootstrap resamples for the 95% CIs.")
@click.option("--subgroups", "subgroup_cols", default=None, metavar="COL,...",
              help="Metadata columns for subgroup metrics besides sex, age bands and site.")
@click.option("--unsafe", is_flag=True, help="Allow Lambda layers with code (trusted files only).")
@pass_settings
def evaluate(settings, target, data, split, report, tta, threshold, target_sensitivity, classes,
             meta, meta_encoding, batch_size, n_bootstrap, subgroup_cols, unsafe):
    """Metrics of a run (default: the latest under ./runs) or of a MODEL.keras file on --data."""
    from skinzoo.deploy.model_card import write_model_card
    from skinzoo.evaluate.evaluation import evaluate_model
    from skinzoo.evaluate.gallery import write_evaluation_report
    from skinzoo.evaluate.subgroups import add_subgroups, parse_columns, subgroup_lines

    if target is not None and not Path(target).exists():
        raise UsageError(f"{target} does not exist", "pass a run directory or a .keras model file")
    if target is not None and not Path(target).is_dir() and data is None:
        raise UsageError(f"{target} is a model file: say which data to evaluate on",
                         "add --data DATASET (and --classes a,b,c if the model has no run folder)")
    loaded = _load(target, classes, unsafe)
    if meta_encoding:
        from skinzoo.evaluate.meta_inputs import use_encoding_file

        use_encoding_file(loaded, meta_encoding)
    loaded.meta = _meta(loaded, meta, per_image_source=True)
    ev = evaluate_model(loaded, data=data, split=split, tta=tta, threshold=_threshold_option(threshold),
                        target_sensitivity=target_sensitivity, batch_size=batch_size,
                        n_bootstrap=n_bootstrap, seed=settings.seed_for(None))
    sub = add_subgroups(loaded, ev, data, parse_columns(subgroup_cols), n_bootstrap,
                        settings.seed_for(None))
    click.echo(format_summary(ev.metrics))
    if sub:
        click.echo("\n".join(subgroup_lines(sub)))
    for warning in ev.metrics["collapse_warnings"]:
        click.secho(f"WARNING: {warning}", fg="red", bold=True, err=True)
    if ev.out_dir is not None:
        click.echo(f"metrics written to {ev.out_dir / 'metrics.json'}")
    if report is not None:
        out = Path(report) if report else (ev.out_dir / "report" if ev.out_dir is not None
                                           else Path(f"report-{loaded.name}"))
        page = write_evaluation_report(loaded, ev, out)
        click.echo(f"report written to {page}")
        click.echo(f"model card written to {write_model_card(loaded, out, ev.metrics, data=data)}")


def format_summary(m: dict) -> str:
    ci = m.get("ci") or {}

    def line(key, label):
        value = m.get(key)
        if value is None:
            return f"  {label:<20} –"
        interval = ci.get(key)
        extra = f"  (95% CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else ""
        return f"  {label:<20} {value:.3f}{extra}"

    out = [f"{m.get('model', '')}: {m['n']} images, split {m['split']}",
           line("accuracy", "accuracy"), line("balanced_accuracy", "balanced accuracy"),
           line("macro_f1", "macro F1"), line("macro_auc", "macro AUC"),
           f"  {'cohen kappa':<20} {m['cohen_kappa']:.3f}",
           f"  {'top-2 accuracy':<20} {m['top2_accuracy']:.3f}",
           f"  {'ECE':<20} {m['ece']:.3f}"]
    if m.get("binary"):
        b = m["binary"]

        def f(v):
            return "–" if v is None else f"{v:.3f}"
        out.append(f"  threshold {b['threshold']:.3f} ({b['threshold_method']}): sensitivity "
                   f"{f(b['sensitivity'])}, specificity {f(b['specificity'])}, PPV {f(b['ppv'])}, "
                   f"NPV {f(b['npv'])}, ROC-AUC {f(b['roc_auc'])}, PR-AUC {f(b['pr_auc'])}")
    if m.get("calibration"):
        c = m["calibration"]
        out.append(f"  calibration T={c['temperature']:.3f}: ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f}")
    if m.get("tta"):
        t = m["tta"]
        how = " (chosen on validation: RUN/tta.json; --tta 1 for one view)" if t.get("chosen_on_val") else ""
        out.append(f"  TTA x{t['views']}{how}: balanced accuracy {t['balanced_accuracy_without']:.3f} -> "
                   f"{t['balanced_accuracy_with']:.3f} ({t['balanced_accuracy_gain']:+.3f})")
    if m.get("auc_skipped_classes"):
        out.append("  AUC skipped (class absent from labels): " + ", ".join(m["auc_skipped_classes"]))
    out.append("  per class:        precision  recall     F1   support")
    for name, row in m["per_class"].items():
        out.append(f"    {name:<16} {row['precision']:9.3f} {row['recall']:7.3f} {row['f1']:6.3f} "
                   f"{row['support']:9d}")
    return "\n".join(out)


# --- predict -----------------------------------------------------------------------------------


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--model", "model_spec", default=None, help="Run directory or .keras file (default: latest run).")
@click.option("--top-k", type=click_type(TOP_K), default=3, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--tta", **TTA_OPTION)
@click.option("--batch-size", type=click_type(BATCH_SIZE), default=32, show_default=True)
@click.option("--classes", default=None, help="Class names in training order (for a bare model file).")
@click.option("--meta", default=None, help="Metadata: field=value,... (e.g. age=55,sex=female,site=back) "
              "or input=v1:v2:... for a raw model input.")
@click.option("--unsafe", is_flag=True, help="Allow Lambda layers with code (trusted files only).")
def predict(images, model_spec, top_k, fmt, tta, batch_size, classes, meta, unsafe):
    """Class probabilities for IMAGE files and/or FOLDERs (searched recursively)."""
    from skinzoo.evaluate.fitted import resolve_tta
    from skinzoo.evaluate.predict import predict_files

    if top_k < 1:
        raise UsageError(f"--top-k {top_k} must be at least 1")
    loaded = _load(model_spec, classes, unsafe)
    chosen = tta is None
    tta = resolve_tta(loaded, tta, batch_size)
    if chosen and tta > 1:
        click.echo(f"note: averaging {tta} test-time views, chosen on the run's validation split "
                   f"({loaded.run.tta}); --tta 1 for one view", err=True)
    results = predict_files(loaded, images, batch_size=batch_size, tta=tta, meta=_meta(loaded, meta))
    k = min(top_k, loaded.num_classes)
    good = [r for r in results if r.error is None]
    for r in results:
        if r.error is not None:
            click.echo(f"error: {r.path}: {r.error}", err=True)
    rows = []
    for r in good:
        order = list(reversed(r.probs.argsort()))[:k]
        rows.append({"path": r.path, "prediction": loaded.classes[order[0]],
                     "top": [(loaded.classes[i], float(r.probs[i])) for i in order],
                     "probs": {c: float(p) for c, p in zip(loaded.classes, r.probs, strict=True)}})
    if fmt == "json":
        click.echo(json.dumps(rows + [{"path": r.path, "error": r.error} for r in results if r.error],
                              indent=2))
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "prediction", *loaded.classes])
        for row in rows:
            writer.writerow([row["path"], row["prediction"], *(f"{row['probs'][c]:.6f}" for c in loaded.classes)])
    else:
        for row in rows:
            top = "  ".join(f"{c} {p:.3f}" for c, p in row["top"])
            click.echo(f"{row['path']}\t{top}")
    if not good:
        raise DataError(f"no image could be predicted ({len(results)} item(s) failed)",
                        "check the paths; supported images are .jpg, .jpeg, .png and .bmp")
    if len(good) < len(results):
        click.echo(f"{len(good)} predicted, {len(results) - len(good)} failed", err=True)


# --- gradcam -----------------------------------------------------------------------------------


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--model", "model_spec", default=None, help="Run directory or .keras file (default: latest run).")
@click.option("--class", "class_name", default="predicted", show_default=True,
              help="Class to explain: a class name or 'predicted'.")
@click.option("--layer", default="auto", show_default=True, help="Feature-map layer (auto = last before pooling).")
@click.option("--method", type=click.Choice(GRADCAM_METHODS), default="gradcam", show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.4, show_default=True, help="Heatmap opacity.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="gradcam", show_default=True)
@click.option("--pair", is_flag=True, help="Also write one correct|misclassified side-by-side per class "
              "(labels from the run's split.csv).")
@click.option("--meta", default=None, help="Metadata: field=value,... (e.g. age=55,sex=female,site=back) "
              "or input=v1:v2:... for a raw model input.")
@click.option("--classes", default=None, help="Class names in training order (for a bare model file).")
@click.option("--batch-size", type=click_type(BATCH_SIZE), default=16, show_default=True)
@click.option("--unsafe", is_flag=True, help="Allow Lambda layers with code (trusted files only).")
def gradcam(images, model_spec, class_name, layer, method, alpha, out_dir, pair, meta, classes,
            batch_size, unsafe):
    """Grad-CAM heatmaps: an overlay PNG and the raw heatmap .npy per image, plus the prediction.

    The .npy holds the raw map at the feature-map resolution (ReLU'd, not normalised).
    """
    from skinzoo.evaluate.exported import require_keras_model
    from skinzoo.evaluate.gradcam import GradCam
    from skinzoo.evaluate.gradcam_gallery import (
        decision_threshold,
        output_stems,
        write_ensemble_maps,
        write_explanations,
        write_pairs,
    )
    from skinzoo.evaluate.predict import (
        collect_image_paths,
        load_images_tolerant,
        model_inputs,
    )
    from skinzoo.fileio import ensure_output_dir

    ensure_output_dir(out_dir)  # before the slow part: an impossible --out fails at once
    loaded = _load(model_spec, classes, unsafe)
    require_keras_model(loaded, "Grad-CAM")
    meta_values = _meta(loaded, meta)  # checked before any image is read or any warning printed
    if class_name != "predicted" and class_name not in loaded.classes:
        raise UsageError(f"--class {class_name!r} is not one of the model's classes",
                         "use 'predicted' or one of: " + ", ".join(loaded.classes))
    paths, errors = collect_image_paths(images)
    imgs, ok, bad = load_images_tolerant(paths, loaded.img_size, loaded.resize)
    errors.update(bad)
    for p, message in errors.items():
        click.echo(f"error: {p}: {message}", err=True)
    if not ok:
        raise DataError("no image could be read", "check the paths")
    cam = GradCam(loaded.model, layer=layer, method=method)
    target = None if class_name == "predicted" else loaded.classes.index(class_name)
    inputs = model_inputs(loaded.model, imgs, meta_values)
    result = cam.explain(inputs, target, batch_size=batch_size, threshold=decision_threshold(loaded))
    out = Path(out_dir)
    click.echo(f"layer: {'/'.join(result.layer_path)}  method: {method}")
    stems = output_stems(ok)
    explained = []
    for e in write_explanations(loaded, ok, imgs, result, stems, method, alpha, out):
        explained.append(e)
        flat = " (flat heatmap: no positive evidence for this class)" if e.flat else ""
        click.echo(f"{e.path}\tpredicted {e.predicted} {e.probability:.3f}\t"
                   f"explained {e.explained}{flat}")
    if layer == "auto":
        members = write_ensemble_maps(loaded.model, inputs, result.class_index, imgs, stems,
                                      method, alpha, batch_size, out)
        if members:
            click.echo(f"ensemble: per-member overlays ({', '.join(members)}) and their "
                       "weighted average (*_ensemble_gradcam.png)")
    if pair:
        written = write_pairs(loaded, explained, out)
        if written is None:
            click.echo("note: --pair needs labels: pass a run directory whose split.csv lists "
                       "the images", err=True)
        else:
            click.echo(f"wrote {written} correct|misclassified pair(s)")
    click.echo(f"wrote {len(ok)} overlay(s) and heatmap(s) to {out}")


# --- calibrate ---------------------------------------------------------------------------------


@click.command()
@click.argument("run_dir", required=False, type=click.Path())
@click.option("--data", type=click.Path(), default=None, help="Dataset (default: the run's split.csv).")
@click.option("--tta", **TTA_OPTION)
@click.option("--batch-size", type=click_type(BATCH_SIZE), default=32, show_default=True)
@click.option("--unsafe", is_flag=True, help="Allow Lambda layers with code (trusted files only).")
def calibrate(run_dir, data, tta, batch_size, unsafe):
    """Fit temperature scaling on the run's validation split; writes RUN/calibration.json."""
    from skinzoo.evaluate.fitted import calibrate_run

    if run_dir is not None and not Path(run_dir).is_dir():
        raise UsageError(f"{run_dir} is not a run directory", "pass the folder made by `skinzoo train`")
    loaded = _load(run_dir, None, unsafe, calibrated=False)
    fitted = calibrate_run(loaded, data=data, tta=tta, batch_size=batch_size)
    click.echo(f"temperature {fitted['temperature']:.3f} on {fitted['n_val']} validation images: "
               f"NLL {fitted['nll_before']:.4f} -> {fitted['nll_after']:.4f}, "
               f"ECE {fitted['ece_before']:.4f} -> {fitted['ece_after']:.4f}")
    click.echo(f"wrote {loaded.run.calibration} (evaluate and predict apply it from now on)")


# --- compare -----------------------------------------------------------------------------------


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--split", default="test", show_default=True, help="Evaluation to compare (RUN/eval/<split>).")
@click.option("--markdown", is_flag=True, help="Print a Markdown table.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Also write a CSV.")
def compare(run_dirs, split, markdown, csv_path):
    """Leaderboard of runs by balanced accuracy (reads RUN/eval/<split>/metrics.json)."""
    from skinzoo.evaluate.compare import COMPARE_COLUMNS, compare_runs

    rows, warnings = compare_runs(run_dirs, split)
    for w in warnings:
        click.secho(f"warning: {w}", fg="yellow", err=True)

    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))

    table = [[cell(r[c]) for c in COMPARE_COLUMNS] for r in rows]
    if markdown:
        click.echo("| " + " | ".join(COMPARE_COLUMNS) + " |")
        click.echo("|" + "---|" * len(COMPARE_COLUMNS))
        for t in table:
            click.echo("| " + " | ".join(t) + " |")
    else:
        widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(COMPARE_COLUMNS)]
        click.echo("  ".join(c.ljust(w) for c, w in zip(COMPARE_COLUMNS, widths, strict=True)))
        for t in table:
            click.echo("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)))
    if csv_path:
        import csv

        from skinzoo.fileio import atomic_path

        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(COMPARE_COLUMNS)
            writer.writerows(table)
        click.echo(f"wrote {csv_path}")
