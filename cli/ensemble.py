"""`skinzoo ensemble`: several trained models as one .keras model (logic in skinzoo.evaluate.ensemble_run)."""

from __future__ import annotations

import click

from skinzoo.errors import UsageError
from skinzoo.models.registry import ENSEMBLE_MEANS


@click.command()
@click.argument("members", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(),
              help="ENSEMBLE.keras (one file), or a folder: a run directory evaluate/compare read.")
@click.option("--weights", "weights_text", default=None, metavar="W1,W2,...|val",
              help="Member weights, or 'val' to fit them on the members' shared validation split "
                   "[equal].")
@click.option("--fit-weights", is_flag=True,
              help="Fit the weights on the members' shared VALIDATION split (same as --weights val): "
                   "members must be run directories trained on one split.")
@click.option("--snapshots", "from_snapshots", is_flag=True,
              help="Members are the snapshots of each RUN (RUN/snapshots/, from `skinzoo train "
                   "--snapshots K`) instead of its best model.")
@click.option("--mean", type=click.Choice(ENSEMBLE_MEANS), default="arithmetic", show_default=True,
              help="How member probabilities are averaged.")
@click.option("--classes", default=None, help="Class names in training order (for bare .keras members).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True)
@click.option("--unsafe", is_flag=True, help="Allow Lambda layers with code (trusted files only).")
def ensemble(members, out, weights_text, fit_weights, from_snapshots, mean, classes, batch_size, unsafe):
    """Combine RUN directories or MODEL files into one model that averages their probabilities.

    \b
    Examples:
      skinzoo ensemble runs/A runs/B runs/C --out runs/ensemble-abc
      skinzoo ensemble runs/A runs/B --out ens.keras --fit-weights --mean geometric
      skinzoo ensemble runs/A --snapshots --out runs/A-snapshots
    """
    from skinzoo.evaluate.ensemble_run import make_ensemble
    from skinzoo.models.ensemble import parse_weights

    if fit_weights and weights_text not in (None, "val"):
        raise UsageError(f"--fit-weights and --weights {weights_text} both set the weights",
                         "use one of the two")
    weights = "val" if fit_weights or weights_text == "val" else parse_weights(weights_text)
    result = make_ensemble(members, out, weights=weights, mean=mean, classes=classes,
                           unsafe=unsafe, batch_size=batch_size, snapshots=from_snapshots)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if result.validation:
        click.echo(f"validation balanced accuracy ({result.validation['n_val']} images):")
        for name, value in result.validation.items():
            if name not in ("n_val", "log_loss"):
                click.echo(f"  {name:<32} {value:.3f}")
        loss = result.validation.get("log_loss")
        if loss:
            click.echo(f"validation log loss (what the weights minimise): equal weights "
                       f"{loss['equal']:.4f}, fitted {loss['fitted']:.4f}")
    click.echo("members and weights: " + ", ".join(
        f"{n} {w:.3f}" for n, w in zip(result.names, result.weights, strict=True)) + f" ({mean} mean)")
    click.echo(f"wrote {result.path}")
    if result.run is not None:
        click.echo(f"next: skinzoo evaluate {result.run}")
