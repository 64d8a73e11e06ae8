"""`skinzoo data preview` and `skinzoo data augment`: see and write augmented data."""

from __future__ import annotations

import click
from skinzoo_cli.ranges import click_type
from skinzoo_cli.settings import pass_settings

from skinzoo.data.decode import RESIZE_MODES
from skinzoo.ranges import SEED


def _usable_table(path, fmt, split_file):
    """The dataset's table without unreadable images; only the train side when a split is given."""
    from skinzoo.data.check import check_dataset
    from skinzoo.data.sources import load_dataset

    dataset = load_dataset(path, format=fmt)
    report = check_dataset(dataset)
    table = dataset.table[report.usable.astype(bool)]
    dropped = len(dataset.table) - len(table)
    if dropped:
        click.echo(f"skipping {dropped} unusable image(s) (see `skinzoo data check {path}`)", err=True)
    if split_file:
        from skinzoo.data.splits import read_split_file

        split = read_split_file(split_file, dataset.table, allow_missing=True)
        table = table[split.reindex(table.index) == "train"]
    return table, dataset.classes


# Options both commands share.
FORMAT_OPTION = click.option("--format", "fmt", default="auto", show_default=True,
                             help="Dataset layout: auto, ham10000, isic2019, csv, folders.")
SEED_OPTION = click.option("--seed", type=click_type(SEED), default=None,
                           help="Seed (default: the global --seed, else 0).")


def resize_option(help_text: str):
    return click.option("--resize", type=click.Choice(RESIZE_MODES), default="crop",
                        show_default=True, help=help_text)


@click.command()
@click.argument("data", type=click.Path(exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for augment.png / hair_removal.png.")
@click.option("--n", "n_images", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Number of images (spread over the classes).")
@click.option("--augment", "augment", default="light", show_default=True,
              help="none, light, heavy, or a preset with overrides, e.g. 'light,rotate=15'.")
@click.option("--hair-removal", is_flag=True, help="Also show hair removal (original | cleaned | mask).")
@click.option("--img-size", type=click.IntRange(8, 1024), default=224, show_default=True,
              help="Side of the images as the model sees them.")
@resize_option("How images are made square.")
@FORMAT_OPTION
@SEED_OPTION
@pass_settings
def preview(settings, data, out_dir, n_images, augment, hair_removal, img_size, resize, fmt, seed):
    """Write before/after PNG grids of DATA's images: what augmentation / hair removal does."""
    import numpy as np

    from skinzoo.data.augment import resolve_augment
    from skinzoo.data.preview import write_preview
    from skinzoo.data.sources import load_dataset

    resolve_augment(augment)  # a bad spec fails before the dataset is read
    seed = settings.seed_for(seed)
    table = load_dataset(data, format=fmt).table
    picks = _spread_over_classes(table["label"].to_numpy(), n_images, np.random.default_rng(seed))
    rows = table.iloc[picks]
    written = write_preview(rows["path"].tolist(), rows["label"].tolist(), out_dir, img_size,
                            augment, hair_removal, seed=seed, resize=resize)
    for path in written:
        click.echo(f"wrote {path}")


def _spread_over_classes(labels, n, rng):
    """Up to ``n`` row positions, taking classes in turn so rare classes are shown too."""
    import numpy as np

    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in sorted(set(labels))}
    picks = []
    while len(picks) < n and any(pools.values()):
        for c in pools:
            if pools[c] and len(picks) < n:
                picks.append(int(pools[c].pop()))
    return picks


@click.command()
@click.argument("data", type=click.Path(exists=True))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--to-count", type=click.IntRange(min=1), required=True,
              help="Images per class after augmentation (larger classes are kept as they are).")
@FORMAT_OPTION
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A split.csv: augment and copy only its train images (val/test must never be "
                   "augmented into training).")
@click.option("--img-size", type=click.IntRange(8, 2048), default=224, show_default=True,
              help="Side of the NEW images (originals are copied unchanged).")
@resize_option("How new images are made square.")
@click.option("--augment", "augment", default="heavy", show_default=True,
              help="light, heavy, or a preset with overrides, e.g. 'heavy,cutout=0'.")
@SEED_OPTION
@pass_settings
def augment(settings, data, out, to_count, fmt, split_file, img_size, resize, augment, seed):
    """Write a physically balanced copy of DATA to OUT: every class topped up to --to-count
    images with augmented variants of its own images.

    OUT gets images/, labels.csv (train on it with `--data OUT`) and images/manifest.csv
    (new file, source file, class, augmentation seed). Without --split-file every image of DATA
    is treated as training data: split first and pass --split-file so that validation and test
    images are neither augmented nor copied.
    """
    from skinzoo.data.augment import resolve_augment
    from skinzoo.data.augmented_copy import write_augmented_copy

    resolve_augment(augment)
    seed = settings.seed_for(seed)
    if not split_file:
        click.echo("note: no --split-file, so all images are treated as training images", err=True)
    table, classes = _usable_table(data, fmt, split_file)
    result = write_augmented_copy(table, classes, out, to_count, img_size=img_size,
                                  augment=augment, seed=seed, resize=resize,
                                  progress=not settings.quiet)
    for c in classes:
        click.echo(f"  {c:>12}: {result.before[c]:6d} -> {result.after[c]:6d}")
    click.echo(f"wrote {sum(result.after.values())} images to {result.out_dir}; "
               f"dataset file {result.labels_csv}, manifest {result.manifest_csv}")
