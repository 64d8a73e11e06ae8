"""`skinzoo data check` and `skinzoo data split`: validate a dataset, make a grouped split.csv."""

from __future__ import annotations

import click
from skinzoo_cli.ranges import click_type
from skinzoo_cli.settings import pass_settings

from skinzoo.data.sources import FORMATS, TASKS
from skinzoo.ranges import FOLDS, FRACTION, SEED


def dataset_options(fn):
    """The options every command that reads a dataset shares."""
    options = [
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto",
                     show_default=True, help="Dataset layout (auto-detected by default)."),
        click.option("--task", type=click.Choice(TASKS), default="multiclass",
                     show_default=True, help="binary maps diagnoses to benign/malignant."),
        click.option("--image-col", default=None, help="CSV column naming the image (file/id)."),
        click.option("--label-col", default=None, help="CSV column holding the label."),
        click.option("--binary-map", default=None, metavar="L=benign,L=malignant",
                     help="Extra label mappings for --task binary."),
        click.option("--allow-outside-root", is_flag=True,
                     help="Accept CSV paths that point outside the CSV's folder."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def load_from_options(path, fmt, task, image_col, label_col, binary_map, allow_outside_root):
    from skinzoo.data.sources import load_dataset, parse_binary_map

    return load_dataset(path, format=fmt, task=task, image_col=image_col, label_col=label_col,
                        binary_map=parse_binary_map(binary_map) if binary_map else None,
                        allow_outside_root=allow_outside_root)


@click.command()
@click.argument("path", type=click.Path())
@dataset_options
@click.option("--val", type=click_type(FRACTION), default=0.15, show_default=True,
              help="Planned validation share (sets how many groups a class needs).")
@click.option("--test", type=click_type(FRACTION), default=0.15, show_default=True,
              help="Planned test share (0 for a train/val split).")
@click.option("--folds", type=click_type(FOLDS), default=None, help="Planned number of CV folds instead.")
@click.option("--full-decode", is_flag=True, help="Decode JPEGs at full size (slower; by default every image is decoded, JPEGs at 1/8 scale).")
@click.option("--max-per-kind", type=click.IntRange(0, 100_000), default=5, show_default=True,
              help="Problems listed per kind.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the report as JSON to this file.")
def check(path, fmt, task, image_col, label_col, binary_map, allow_outside_root, val, test, folds,
          full_decode, max_per_kind, json_path):
    """Validate the dataset at PATH (folder or CSV) and summarise it.

    Lists every unreadable image, bad CSV row, duplicate and class without enough groups to
    split. Exits 0 when the dataset can be trained on (bad images are skipped), 3 when not.
    """
    from skinzoo.data.check import check_dataset, report_text
    from skinzoo.errors import DataError
    from skinzoo.fileio import write_json_atomic

    dataset = load_from_options(path, fmt, task, image_col, label_col, binary_map,
                                allow_outside_root)
    report = check_dataset(dataset, val=val, test=test, folds=folds,
                           decode="always" if full_decode else "auto")
    click.echo(report_text(report, max_per_kind=max_per_kind))
    if json_path:
        write_json_atomic(json_path, report.to_dict())
        click.echo(f"report written to {json_path}")
    if report.blocking:
        errors = report.errors
        raise DataError(f"{len(errors)} problem(s) block training: {errors[0].message}",
                        "fix the errors listed above (add data, merge or drop the class), or plan "
                        "fewer sides with --test 0 / --folds")
    click.echo("ok: the dataset can be used for training")


@click.command()
@click.argument("path", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Where to write split.csv (reuse it with train --split-file).")
@dataset_options
@click.option("--val", type=click_type(FRACTION), default=0.15, show_default=True, help="Validation share.")
@click.option("--test", type=click_type(FRACTION), default=0.15, show_default=True,
              help="Test share (0 for 80/20-style train/val).")
@click.option("--folds", type=click_type(FOLDS), default=None, help="Make K cross-validation folds instead.")
@click.option("--source-split", is_flag=True,
              help="Keep the dataset's own train/val/test folders (val carved from train if absent).")
@click.option("--seed", type=click_type(SEED), default=None, help="Seed (default: the global --seed, else 0).")
@click.option("--no-check", is_flag=True, help="Do not inspect the images first (faster).")
@pass_settings
def split(settings, path, out, fmt, task, image_col, label_col, binary_map, allow_outside_root, val,
          test, folds, source_split, seed, no_check):
    """Write a grouped, stratified split of PATH to --out and print its class counts.

    Unreadable images are left out first (unless --no-check), so the split file lists exactly
    the images training will use.
    """
    from skinzoo.data.check import validate_for_training
    from skinzoo.data.splits import (
        from_source_split,
        make_folds,
        make_split,
        split_table_summary,
        write_split_file,
    )
    from skinzoo.errors import UsageError

    if folds is not None and source_split:
        raise UsageError("--folds and --source-split cannot be combined",
                         "choose one way to split")
    seed = settings.seed_for(seed)
    dataset = load_from_options(path, fmt, task, image_col, label_col, binary_map,
                                allow_outside_root)
    if not no_check:
        dataset, report = validate_for_training(dataset, val=val, test=test, folds=folds)
        if report.summary["unusable"]:
            click.echo(f"left out {report.summary['unusable']} unusable image(s); "
                       "see `skinzoo data check`")
    table = dataset.table
    if folds is not None:
        assignment = make_folds(table, k=folds, seed=seed)
    elif source_split:
        assignment = from_source_split(table, val=val, seed=seed)
    else:
        assignment = make_split(table, val=val, test=test, seed=seed)
    write_split_file(table, assignment, out)
    summary = split_table_summary(table, assignment, dataset.classes)
    click.echo(format_split_summary(summary))
    click.echo(f"wrote {out} ({len(table)} images, seed {seed})")


def format_split_summary(summary) -> str:
    """Counts with each split's share of the class, e.g. ``229 (70%)``."""
    sides = [c for c in summary.columns if c != "total"]
    cells = summary.copy().astype(object)
    for name in summary.index:
        if name == "groups":
            continue
        total = summary.at[name, "total"]
        for side in sides:
            n = summary.at[name, side]
            cells.at[name, side] = f"{n} ({n / total:.0%})" if total else "0"
    return cells.to_string()
