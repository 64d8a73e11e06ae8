"""`skinzoo data explore`: plots + one self-contained HTML page about a dataset."""

from __future__ import annotations

import time

import click
from skinzoo_cli.data_check import dataset_options, load_from_options
from skinzoo_cli.settings import pass_settings


@click.command()
@click.argument("path", type=click.Path())
@dataset_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the plots and explore.html [default: ./explore-<dataset name> in "
                   "the working directory, never inside the dataset].")
@click.option("--sample", type=click.IntRange(min=0), default=0,
              help="Read the size/format/mode of N images (seeded random sample) [default: all, "
                   "up to 20,000].")
@click.option("--split-file", type=click.Path(dir_okay=False), default=None,
              help="A split.csv (from `skinzoo data split` or a run dir): class counts per side "
                   "[default: the train/val/test folders of a folder dataset, if it has them].")
@click.option("--full-decode", is_flag=True,
              help="Validation decodes JPEGs at full size (slower; by default at 1/8 scale).")
@pass_settings
def explore(settings, path, fmt, task, image_col, label_col, binary_map, allow_outside_root, out_dir,
            sample, split_file, full_decode):
    """Summarise and plot the dataset at PATH (a folder or a labels CSV).

    Writes one PNG per view (classes, images per lesion, age, sex, body site, diagnosis by
    sex / age group, site x diagnosis heatmap, age per diagnosis, image sizes, split counts),
    explore.html (all images embedded: open it offline or send it as one file) and
    summary.json, and prints a short summary. Views that need metadata are left out when the
    dataset has none; problems found by the validation are listed on the page.
    """
    from skinzoo.data.check import check_dataset
    from skinzoo.data.explore import default_out_dir, explore_table
    from skinzoo.fileio import ensure_output_dir

    started = time.perf_counter()
    dataset = load_from_options(path, fmt, task, image_col, label_col, binary_map,
                                allow_outside_root)
    # The check's problems include those met while reading (dataset.problems).
    report = check_dataset(dataset, decode="always" if full_decode else "auto")
    split = None
    if split_file:
        from skinzoo.data.splits import read_split_file

        split = read_split_file(split_file, dataset.table)
    elif "source_split" in dataset.table:  # train/ val/ test/ folders are a split already
        split = dataset.table["source_split"]
    out = default_out_dir(path) if out_dir is None else out_dir
    ensure_output_dir(out)  # one line, not a traceback, for an impossible --out
    seed = settings.seed_for(None)
    result = explore_table(dataset.table, dataset.classes, out, name=_dataset_name(path),
                           problems=report.problems, split=split, sample=sample, seed=seed)
    for line in result.lines:
        click.echo(line)
    click.echo(f"wrote {len(result.plots)} plots, explore.html and summary.json to "
               f"{result.out_dir} in {time.perf_counter() - started:.1f} s")


def _dataset_name(path) -> str:
    from pathlib import Path

    resolved = Path(path).expanduser().resolve()
    return resolved.stem if resolved.is_file() else resolved.name
