"""`skinzoo data download`: fetch a public dermoscopy set and lay it out for `skinzoo train`."""

from __future__ import annotations

import click

from skinzoo.data.download import DATASET_NAMES, RETRIES


@click.command()
@click.argument("name", required=False, type=click.Choice(DATASET_NAMES))
@click.option("--to", "to_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the dataset [default: data/NAME]. Archives go to DIR/downloads/.")
@click.option("--list", "list_only", is_flag=True, help="List the sets: sizes, licences, files, citations.")
@click.option("--mirror", default=None, metavar="URL",
              help="Fetch every file as URL/<file name> (a local or institutional copy) instead of "
                   "the publisher's address.")
@click.option("--retries", type=click.IntRange(0, 20), default=RETRIES, show_default=True,
              help="Automatic resumes of a transfer that breaks off.")
def download(name, to_dir, list_only, mirror, retries):
    """Download public set NAME (ham10000, isic2019, isic2018), verify and unpack it into the
    layout `--format auto` reads, then print the `skinzoo train` command.

    \b
    A partial download is resumed (HTTP Range); each file's size is checked against the
    server's, and its SHA-256 is recorded on first download in DIR/downloads/SHA256SUMS and
    checked on every later run. Files you place in DIR/downloads/ by hand are used as they are.

    \b
    Examples:
      skinzoo data download --list
      skinzoo data download ham10000 --to ~/data/ham10000
      skinzoo data download isic2018 --to ~/data/isic2018
    """
    from skinzoo.data.download import catalogue_lines, download_dataset

    if list_only:
        for line in catalogue_lines():
            click.echo(line)
        return
    if name is None:
        raise click.UsageError("give a dataset NAME, or --list to see them")
    result = download_dataset(name, to_dir or f"data/{name}", mirror=mirror, retries=retries)
    d = result.dataset
    if result.fetched:
        click.echo(f"downloaded: {', '.join(result.fetched)}")
    if result.reused:
        click.echo(f"already there (checked): {', '.join(result.reused)}")
    if result.unpacked:
        click.echo(f"unpacked: {', '.join(result.unpacked)}")
    click.echo(f"{d.name} is ready in {result.root} (licence: {d.licence})")
    click.echo(f"please cite: {d.citation}")
    click.echo("train with:")
    click.echo(f"  {result.train_command}")
