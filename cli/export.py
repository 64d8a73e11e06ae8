"""`skinzoo export`: SavedModel (TF Serving), TFLite (float32/float16/int8) or ONNX, verified."""

from __future__ import annotations

from pathlib import Path

import click
from skinzoo_cli.settings import pass_settings

from skinzoo.deploy.export import (
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_CHECK_IMAGES,
    FORMATS,
    PRECISIONS,
)
from skinzoo.errors import UsageError


@click.command()
@click.argument("target", required=False, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True,
              help="savedmodel: TF Serving, takes encoded image bytes (and float pixels); "
                   "tflite: phones/edge; onnx: onnxruntime and other runtimes.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="float32", show_default=True,
              help="TFLite only: float16 weights, or int8 calibrated on training images.")
@click.option("--out", type=click.Path(), default=None,
              help="Where to write (default: RUN/export/savedmodel, model-<precision>.tflite, model.onnx).")
@click.option("--check-images", multiple=True, type=click.Path(exists=True),
              help="Images/folders to verify the export on (default: the run's validation split).")
@click.option("--check-count", type=click.IntRange(1, 10000), default=DEFAULT_CHECK_IMAGES,
              show_default=True, help="How many images to verify on.")
@click.option("--calibration-images", multiple=True, type=click.Path(exists=True),
              help="int8: training images/folders (default: the run's training split; "
                   "test/validation images are refused).")
@click.option("--calibration-count", type=click.IntRange(10, 5000),
              default=DEFAULT_CALIBRATION_IMAGES, show_default=True,
              help="int8: how many calibration images.")
@click.option("--classes", default=None, help="Class names in training order (for a bare model file).")
@click.option("--unsafe", is_flag=True, help="Allow Lambda layers with code (trusted files only).")
@pass_settings
def export(settings, target, fmt, precision, out, check_images, check_count, calibration_images,
           calibration_count, classes, unsafe):
    """Export a run's model (default: the latest run) or a MODEL.keras for deployment.

    The export is checked against the Keras model before it is written: on float32 the largest
    probability difference must stay <= 1e-4, float16 <= 1e-2, int8 must agree on the top-1 class
    for >= 90% of the check images. The result is printed and stored in skinzoo.json beside
    the export, with a model card (MODEL_CARD.md + model_card.json).
    """
    from skinzoo.deploy.export import export_model
    from skinzoo.deploy.model_card import write_model_card
    from skinzoo.evaluate.exported import info_path
    from skinzoo.evaluate.predict import resolve_model
    from skinzoo.rundir import read_run_config

    if target is not None and not Path(target).exists():
        raise UsageError(f"{target} does not exist", "pass a run directory or a .keras model file")
    seed = settings.seed_for(None)
    loaded = resolve_model(target, classes=classes, unsafe=unsafe)
    for note in loaded.notes:
        click.echo(f"note: {note}", err=True)
    config = read_run_config(loaded.run)
    result = export_model(loaded, fmt, out, precision, check_images=check_images,
                          check_count=check_count, calibration_images=calibration_images,
                          calibration_count=calibration_count, seed=seed,
                          hair_removal=bool(config.get("hair_removal")))
    v = result.verification
    click.echo(f"exported {fmt} ({precision}) to {result.path} ({result.size_bytes / 1e6:.2f} MB)")
    if result.info.get("int8_calibration"):
        click.echo(f"int8 calibration: {result.info['int8_calibration']}")
    click.echo(f"verified against the Keras model on {v['images']} images ({v['images_from']}):")
    for check in v["checks"]:
        click.echo(f"  {check['what']}: {check['summary']}  [ok: {check['tolerance_text']}]")
    if result.path.is_dir():  # a SavedModel folder: the card travels inside it
        card = write_model_card(loaded, result.path, export=result.info)
    else:
        card = write_model_card(loaded, result.path.parent, export=result.info,
                                prefix=f"{result.path.name}.")
    click.echo(f"description: {info_path(result.path)}; model card: {card}")
