"""`skinzoo info`: the environment report to paste into a bug report."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-network", is_flag=True, help="Skip the 2-second ImageNet download check.")
@click.option("--runs", "runs_root", type=click.Path(file_okay=False), default="runs", show_default=True,
              help="The runs folder to report on (train --out).")
def info(as_json, no_network, runs_root):
    """Versions, devices (GPUs, CPU features), memory, where runs and caches go, and whether
    the ImageNet weights can be downloaded from here. Downloads nothing.

    \b
    Paste its output into bug reports:
      skinzoo info
      skinzoo info --json > info.json
    """
    from skinzoo.info import collect_info, info_lines

    report = collect_info(runs_root, network=not no_network)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    for line in info_lines(report):
        click.echo(line)
