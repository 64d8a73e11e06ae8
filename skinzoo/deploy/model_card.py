"""Model cards (Mitchell et al. 2019): ``MODEL_CARD.md`` + ``model_card.json``.

Everything in a card is read from the run directory (config.toml, split.csv, classes.json,
history.csv, metrics.json, eval/test/metrics.json, calibration.json, threshold.json), the model
file and, when the run's dataset is still there, its metadata. What is not known is written as
"not recorded", never filled in. The intended use is fixed: research and education; skinzoo
models are not diagnostic devices.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
from pathlib import Path

from skinzoo.data.splits import read_split_table
from skinzoo.evaluate.subgroups import dataset_metadata, group_labels
from skinzoo.fileio import read_json, write_json_atomic, write_text_atomic
from skinzoo.rundir import read_run_config

CARD_MD = "MODEL_CARD.md"
CARD_JSON = "model_card.json"
NOT_RECORDED = "not recorded"
INTENDED_USE = ("Research and education: studying how image classifiers behave on dermoscopic "
                "(or other medical) images, comparing methods, teaching.")
NOT_FOR = ("NOT a diagnostic device. Not for diagnosing, screening or triaging patients, and not "
           "a substitute for a clinician's examination or histopathology. It has not been "
           "validated prospectively or approved by any regulator.")
TRAINING_KEYS = ("model", "weights", "img_size", "epochs", "batch_size", "lr", "optimizer",
                 "weight_decay", "schedule", "warmup_epochs", "label_smoothing", "clipnorm",
                 "balance", "augment", "stages", "finetune_blocks", "finetune_epochs",
                 "finetune_lr", "early_stopping", "monitor", "precision", "seed", "deterministic")
UNDER_REPRESENTED_SHARE = 0.05  # a site/sex/age band with less of the training split is listed
SKIN_TYPE_WORDS = ("fitzpatrick", "skin_type", "skintype", "skin_tone", "skintone")


def _json_or_none(path):
    return read_json(path) if path is not None and Path(path).is_file() else None


def _split_counts(split_csv) -> dict | None:
    """``{"images": {split: {class: n}}, "groups": {split: n}}`` from split.csv."""
    if split_csv is None or not Path(split_csv).is_file():
        return None
    images, groups = {}, {}
    with open(split_csv, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            side, label = row.get("split") or "?", row.get("label") or "?"
            images.setdefault(side, {}).setdefault(label, 0)
            images[side][label] += 1
            groups.setdefault(side, set()).add(row.get("group") or row.get("image_id"))
    return {"images": {s: dict(sorted(c.items())) for s, c in images.items()},
            "groups": {s: len(g) for s, g in groups.items()}}


def _history(history_csv) -> dict | None:
    if history_csv is None or not Path(history_csv).is_file():
        return None
    with open(history_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = {"epochs_run": len(rows)}
    if rows and "stage" in rows[0]:
        out["stages"] = sorted({r["stage"] for r in rows if r.get("stage")})
    return out


def _headline(m: dict | None) -> dict | None:
    if not m:
        return None
    keys = ("n", "accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "ece", "cohen_kappa")
    out = {k: m.get(k) for k in keys if k in m}
    if m.get("ci"):
        out["ci95"] = m["ci"]
    if m.get("per_class"):
        out["per_class"] = {c: {k: r.get(k) for k in ("precision", "recall", "f1", "support", "auc")}
                            for c, r in m["per_class"].items()}
    for key in ("binary", "calibration", "collapse_warnings", "split", "source"):
        if m.get(key):
            out[key] = m[key]
    if m.get("subgroups"):
        sub = m["subgroups"]
        out["subgroups"] = {"overall": sub["overall"], "flagged": sub["flagged"], "rule": sub["rule"],
                            "groups": {col: {g: {k: r.get(k) for k in ("n", "balanced_accuracy",
                                                                        "sensitivity", "ci")}
                                             for g, r in rows.items()}
                                       for col, rows in sub["columns"].items()}}
    return out


def _param_count(model) -> int | None:
    try:
        return int(model.count_params())
    except (AttributeError, ValueError):
        return None  # an exported model: the count is in the card of the Keras model


def _metadata_shares(loaded, config, data=None) -> dict | None:
    """Counts of sex / site / age band among the TRAINING images, when the dataset is readable."""
    if loaded.run is None or not (data or config.get("data")):
        return None
    table, _ = dataset_metadata(loaded, data)
    if table is None or not loaded.run.split.is_file():
        return None
    split = read_split_table(loaded.run.split)
    train = {os.path.realpath(p) for p in split.loc[split["split"] == "train", "path"]}
    rows = table[table["resolved"].isin(train)]
    out = {"columns": [c for c in table.columns if c not in ("resolved",)]}
    for column in ("sex", "age", "site"):
        if column in rows and rows[column].notna().any() and len(rows):
            counts = group_labels(rows[column].reset_index(drop=True), column).value_counts()
            out[column] = {str(k): int(v) for k, v in counts.items()}
    return out


def _limitations(info: dict, classes, counts, shares, test) -> list[str]:
    """Known limitations, each derived from a recorded fact."""
    size = info.get("img_size")
    out = [f"It knows only these {len(classes)} classes: {', '.join(classes)}. Any other lesion, "
           "or an image that is not a lesion at all, is still assigned one of them."]
    if size:
        out.append(f"It sees every image at {size} px ({info.get('resize', 'crop')} resize): detail "
                   "finer than that resolution is lost, and images from other devices or "
                   "magnifications than the training data were not measured.")
    train = (counts or {}).get("images", {}).get("train")
    if train:
        total = sum(train.values())
        few = [f"{c} ({n})" for c, n in train.items() if n < max(30, 0.02 * total)]
        if few:
            out.append("Classes with few training images (results for them are uncertain): "
                       + ", ".join(few) + ".")
    columns = [c.lower() for c in (shares or {}).get("columns", [])]
    if shares is not None and not any(w in c for c in columns for w in SKIN_TYPE_WORDS):
        out.append("The training data records no skin type (Fitzpatrick) or skin tone: how the "
                   "model performs across skin tones is unknown and was not measured.")
    for column in ("site", "sex", "age"):
        values = (shares or {}).get(column)
        if values:
            total = sum(values.values())
            rare = [f"{k} ({v})" for k, v in values.items()
                    if k != "unknown" and v < UNDER_REPRESENTED_SHARE * total]
            if rare:
                label = {"age": "Age bands", "site": "Anatomical sites", "sex": "Sex groups"}[column]
                out.append(f"{label} under-represented in training (< {UNDER_REPRESENTED_SHARE:.0%} of "
                           f"{total} images): " + ", ".join(rare) + ".")
    if shares is None:
        out.append("Patient metadata (sex, age, site) of the training images is not available "
                   "here, so under-represented groups cannot be listed.")
    flagged = ((test or {}).get("subgroups") or {}).get("flagged") or []
    for f in flagged:
        out.append(f"Test subgroup {f['column']}={f['group']} (n={f['n']}) scores clearly below "
                   "the overall figure: " + "; ".join(f["flags"]) + ".")
    if test is None:
        out.append("No test-split evaluation was recorded: run `skinzoo evaluate RUN --report`.")
    else:
        out.append("Test metrics come from one held-out split of one dataset; performance in other "
                   "clinics, populations or cameras was not measured.")
    return out


def build_model_card(loaded, evaluation: dict | None = None, export: dict | None = None,
                     data=None) -> dict:
    """The card as a JSON-ready dict (``evaluation``: this evaluation's metrics, if any;
    ``data``: the dataset evaluated on, for the training images' metadata)."""
    from skinzoo import __version__

    run = loaded.run
    config = read_run_config(run)
    info = run.read_info() if run is not None else {}
    counts = _split_counts(run.split if run is not None else None)
    shares = _metadata_shares(loaded, config, data)
    stored_test = _json_or_none(run.eval_dir / "test" / "metrics.json") if run is not None else None
    test_metrics = evaluation if (evaluation and evaluation.get("split") == "test") else stored_test
    other_eval = evaluation if (evaluation and evaluation.get("split") != "test") else None
    validation = _json_or_none(run.metrics) if run is not None else None
    calibration = _json_or_none(run.calibration) if run is not None else None
    threshold = _json_or_none(run.threshold) if run is not None else None
    test = _headline(test_metrics)
    card = {
        "schema": "skinzoo-model-card/1",
        "model_details": {
            "name": loaded.name,
            "architecture": info.get("model") or config.get("model") or NOT_RECORDED,
            "parameters": _param_count(loaded.model),
            "task": loaded.task,
            "classes": list(loaded.classes),
            "input": f"RGB, {loaded.img_size[0]}x{loaded.img_size[1]} px, raw 0-255 values "
                     "(the model rescales itself)",
            "model_file": str(loaded.source),
            "run": str(run.path) if run is not None else None,
            "card_written": _dt.datetime.now().isoformat(timespec="seconds"),
            "skinzoo_version": __version__,
        },
        "intended_use": {"primary": INTENDED_USE, "out_of_scope": NOT_FOR},
        "training_data": {
            "dataset": config.get("data") or NOT_RECORDED,
            "format": config.get("format") or NOT_RECORDED,
            "images_per_split_and_class": (counts or {}).get("images") or NOT_RECORDED,
            "groups_per_split": (counts or {}).get("groups") or NOT_RECORDED,
            "split_protocol": ("grouped by lesion/patient (no group on two sides), stratified by "
                               f"class; val {config.get('val')}, test {config.get('test')}, "
                               f"seed {config.get('seed')}") if config else NOT_RECORDED,
            "training_metadata": shares or NOT_RECORDED,
        },
        "preprocessing": {
            "resize": info.get("resize") or config.get("resize") or loaded.resize,
            "img_size": list(loaded.img_size),
            "hair_removal": config.get("hair_removal", NOT_RECORDED),
            "augmentation_in_training": config.get("augment", NOT_RECORDED),
            "pixels": "decoded to RGB, resized by skinzoo's pipeline, fed as 0-255 floats",
        },
        "training": ({k: config[k] for k in TRAINING_KEYS if k in config} | (_history(
            run.history if run is not None else None) or {})) or NOT_RECORDED,
        "metrics": {
            "validation": _headline(validation) or NOT_RECORDED,
            "test": test or NOT_RECORDED,
            **({"other_evaluation": _headline(other_eval)} if other_eval else {}),
        },
        "calibration": calibration or "no temperature scaling fitted",
        "decision_threshold": threshold or ("argmax" if loaded.task != "binary" else NOT_RECORDED),
        "limitations": _limitations(info or {"img_size": list(loaded.img_size), "resize": loaded.resize},
                                    loaded.classes, counts, shares, test),
    }
    if export:
        card["export"] = {k: export.get(k) for k in ("format", "precision", "file", "inputs",
                                                     "signatures", "int8_calibration", "verification")
                          if export.get(k) is not None}
    return card


def write_model_card(loaded, out_dir, evaluation: dict | None = None, export: dict | None = None,
                     data=None, prefix: str = "") -> Path:
    """Write ``<prefix>MODEL_CARD.md`` and ``<prefix>model_card.json`` into ``out_dir``; returns
    the .md path. A file export uses ``prefix="<file name>."``, so a card never lands on a
    ``MODEL_CARD.md`` of the user's that happens to sit in the same folder."""
    card = build_model_card(loaded, evaluation, export, data)
    out = Path(out_dir)
    write_json_atomic(out / f"{prefix}{CARD_JSON}", card)
    write_text_atomic(out / f"{prefix}{CARD_MD}", render_markdown(card))
    return out / f"{prefix}{CARD_MD}"


# --- markdown ------------------------------------------------------------------------------------


def _v(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _metric_table(m: dict) -> list[str]:
    ci = m.get("ci95") or {}
    lines = ["| metric | value | 95% CI |", "|---|---|---|"]
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "ece", "cohen_kappa"):
        if key in m:
            interval = ci.get(key)
            lines.append(f"| {key} | {_v(m[key])} | "
                         + (f"{interval[0]:.3f}–{interval[1]:.3f}" if interval else "") + " |")
    if m.get("per_class"):
        lines += ["", "| class | support | precision | recall | F1 | AUC |", "|---|---|---|---|---|---|"]
        lines += [f"| {c} | {r['support']} | {_v(r['precision'])} | {_v(r['recall'])} | {_v(r['f1'])} "
                  f"| {_v(r['auc'])} |" for c, r in m["per_class"].items()]
    b = m.get("binary")
    if b:
        lines += ["", f"Threshold {_v(b.get('threshold'))} ({b.get('threshold_method', '')}): "
                  f"sensitivity {_v(b.get('sensitivity'))}, specificity {_v(b.get('specificity'))}, "
                  f"PPV {_v(b.get('ppv'))}, NPV {_v(b.get('npv'))}."]
    if m.get("calibration"):
        c = m["calibration"]
        lines += ["", f"Temperature {c['temperature']:.3f}: ECE {_v(c['ece_before'])} → {_v(c['ece_after'])}."]
    if m.get("subgroups"):
        s = m["subgroups"]
        lines += ["", f"Subgroups ({s['rule']}):", "", "| column | group | n | balanced accuracy | 95% CI |",
                  "|---|---|---|---|---|"]
        for col, rows in s["groups"].items():
            for g, r in rows.items():
                interval = (r.get("ci") or {}).get("balanced_accuracy")
                lines.append(f"| {col} | {g} | {r['n']} | {_v(r['balanced_accuracy'])} | "
                             + (f"{interval[0]:.3f}–{interval[1]:.3f}" if interval else "") + " |")
        if s["flagged"]:
            lines += ["", "Flagged: " + "; ".join(f"{f['column']}={f['group']}" for f in s["flagged"])]
    return lines


def _block(value) -> list[str]:
    if isinstance(value, dict):
        return [f"- **{k}**: {_inline(v)}" for k, v in value.items()]
    return [_inline(value)]


def _inline(value) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_inline(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_inline(v) for v in value)
    return _v(value)


def render_markdown(card: dict) -> str:
    d = card["model_details"]
    lines = [f"# Model card: {d['name']}", "",
             "> **Not a diagnostic device.** For research and education only.", "",
             "## Model details", *_block(d), "",
             "## Intended use", f"- **Primary use**: {card['intended_use']['primary']}",
             f"- **Out of scope**: {card['intended_use']['out_of_scope']}", "",
             "## Training data", *_block(card["training_data"]), "",
             "## Preprocessing", *_block(card["preprocessing"]), "",
             "## Training settings", *_block(card["training"]), "",
             "## Metrics", "", "### Test split"]
    test = card["metrics"]["test"]
    lines += _metric_table(test) if isinstance(test, dict) else [test]
    lines += ["", "### Validation split (model selection; optimistic)"]
    val = card["metrics"]["validation"]
    lines += _metric_table(val) if isinstance(val, dict) else [val]
    if card["metrics"].get("other_evaluation"):
        lines += ["", "### Other evaluation", *_metric_table(card["metrics"]["other_evaluation"])]
    lines += ["", "## Calibration and decision", *_block(card["calibration"]),
              f"- **decision threshold**: {_inline(card['decision_threshold'])}", "",
              "## Known limitations", *[f"- {x}" for x in card["limitations"]]]
    if card.get("export"):
        e = card["export"]
        v = e.get("verification") or {}
        lines += ["", "## Export", f"- **format**: {e.get('format')} ({e.get('precision')}), file {e.get('file')}"]
        for check in v.get("checks", []):
            lines.append(f"- check on {v.get('images')} images ({v.get('images_from')}): {check['what']}: "
                         f"{check['summary']} (tolerance {check['tolerance_text']})")
    return "\n".join(lines) + "\n"
