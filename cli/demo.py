"""`make demo`: the main job end to end on the built-in synthetic dataset, through the real CLI.

synth data → check → train (compact_resnet, CPU, ~1–2 min) → evaluate --report → Grad-CAM on one
test image → a list of where every output is.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import click


def _run(args: list[str]) -> None:
    from skinzoo_cli.main import cli

    click.secho(f"\n$ skinzoo {' '.join(args)}", bold=True)
    try:
        cli.main(args=args, prog_name="skinzoo", standalone_mode=False)
    except click.exceptions.Exit as done:
        if done.exit_code:
            sys.exit(done.exit_code)


@click.command()
@click.option("--out", default="demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--epochs", type=click.IntRange(1, 10_000), default=15, show_default=True)
@click.option("--n", "n_images", type=click.IntRange(50, 1_000_000), default=700, show_default=True)
def main(out, epochs, n_images):
    from skinzoo.runtime import filter_native_stderr

    filter_native_stderr()
    started = time.time()
    out = Path(out)
    data, runs = out / "data", out / "runs"
    if out.exists():
        shutil.rmtree(out)
    _run(["data", "synth", str(data), "--n", str(n_images), "--size", "96", "--seed", "0"])
    _run(["data", "check", str(data)])
    _run(["train", "--data", str(data), "--model", "compact_resnet", "--img-size", "64",
          "--epochs", str(epochs), "--out", str(runs), "--seed", "0"])
    from skinzoo.rundir import find_latest_run

    run = find_latest_run(runs)
    _run(["evaluate", str(run.path), "--report"])
    from skinzoo.data.splits import read_split_table

    split = read_split_table(run.split)
    test_image = split[split["split"] == "test"].iloc[0]["path"]
    _run(["gradcam", test_image, "--model", str(run.path), "--out", str(out / "gradcam")])
    click.secho(f"\ndemo finished in {(time.time() - started) / 60:.1f} min. Outputs:", bold=True)
    for label, path in [
        ("dataset", data), ("run directory", run.path), ("best model", run.best_model),
        ("training curves", run.curves), ("evaluation report", run.eval_dir / "test" / "report" / "report.html"),
        ("Grad-CAM overlays", out / "gradcam"),
    ]:
        mark = "" if Path(path).exists() else "  (missing)"
        click.echo(f"  {label:<18} {path}{mark}")


if __name__ == "__main__":
    main()
