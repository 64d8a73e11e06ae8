"""`skinzoo data ...`: the dataset commands (each subcommand in its own module)."""

from __future__ import annotations

import click
from skinzoo_cli.main import LazyGroup
from skinzoo_cli.ranges import click_type
from skinzoo_cli.settings import pass_settings

from skinzoo.ranges import SEED

DATA_COMMANDS = {
    "synth": ("skinzoo_cli.data", "synth", "Write the built-in synthetic demo dataset."),
    "check": ("skinzoo_cli.data_check", "check", "Validate a dataset and summarise it."),
    "split": ("skinzoo_cli.data_check", "split", "Make a grouped, stratified split.csv."),
    "explore": ("skinzoo_cli.data_explore", "explore", "Plots + one HTML page about a dataset."),
    "preview": ("skinzoo_cli.data_prep", "preview", "Before/after images of augmentation / hair removal."),
    "augment": ("skinzoo_cli.data_prep", "augment", "Write a physically balanced augmented copy."),
    "download": ("skinzoo_cli.data_download", "download", "Fetch HAM10000 / ISIC 2019 / ISIC 2018, ready to train."),
}


@click.group(cls=LazyGroup, table=DATA_COMMANDS)
def data():
    """Make, check, explore and preview datasets."""


@click.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--n", "n_images", type=click.IntRange(1, 1_000_000), default=700, show_default=True, help="Number of images.")
@click.option("--size", type=click.IntRange(8, 2048), default=96, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=click_type(SEED), default=None, help="Seed (default: the global --seed, else 0).")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset in OUT.")
@pass_settings
def synth(settings, out, n_images, size, seed, overwrite):
    """Write a synthetic, learnable dermoscopy-like dataset in the HAM10000 layout to OUT."""
    from skinzoo.data.synth import make_synthetic_dataset

    seed = settings.seed_for(seed)
    table = make_synthetic_dataset(out, n_images=n_images, size=size, seed=seed, overwrite=overwrite)
    counts = table["dx"].value_counts()
    click.echo(f"wrote {len(table)} images of {table['lesion_id'].nunique()} lesions to {out}")
    click.echo("  " + ", ".join(f"{k} {v}" for k, v in counts.items()))
