"""The --report gallery of a model that takes metadata: each image's age/sex/site under it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from skinzoo_cli.main import cli

from skinzoo.data.metadata import Field, MetadataEncoding
from skinzoo.evaluate.report import metadata_caption, metadata_captions

ENCODING = MetadataEncoding((
    Field("age", "age", "numeric", 100.0),
    Field("sex", "sex", "category", categories=("female", "male")),
    Field("site", "localization", "category", categories=("back", "face", "lower extremity")),
))


def test_caption_decodes_what_the_model_was_fed():
    row = ENCODING.encode_values({"age": 55, "sex": "female", "site": "lower extremity"})
    assert metadata_caption(ENCODING, row) == "age 55\nsex female\nsite lower extremity"
    row = ENCODING.encode_values({"age": 42.5, "sex": "unknown", "site": "scalp"})  # scalp: unseen
    assert metadata_caption(ENCODING, row) == "age 42.5\nsex missing\nsite missing"
    assert metadata_caption(ENCODING, ENCODING.encode_values({})) == "age missing\nsex missing\nsite missing"


def test_captions_per_image_or_one_constant_for_all():
    rows = np.concatenate([ENCODING.encode_values({"age": 30}), ENCODING.encode_values({"sex": "male"})])
    assert metadata_captions({"metadata": ENCODING}, {"metadata": rows}, 2) == [
        "age 30\nsex missing\nsite missing", "age missing\nsex male\nsite missing"]
    constant = ENCODING.encode_values({"site": "face"})  # --meta site=face: (1, W) for every image
    assert metadata_captions({"metadata": ENCODING}, {"metadata": constant}, 3) == \
        ["age missing\nsex missing\nsite face"] * 3
    assert metadata_captions({}, None, 2) == [None, None]  # an image-only model: no caption


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory, synth_dir):
    """A run of a (briefly trained) two-input model, laid out as `train --metadata age,sex,site`
    leaves it: metadata.json + metadata.csv with every image's raw values."""
    from skinzoo.data.metadata import encoding_for_run
    from skinzoo.data.sources import load_dataset
    from skinzoo.models.fusion import with_metadata

    from .conftest import make_run, tiny_cnn

    run = make_run(tmp_path_factory.mktemp("meta"), synth_dir, epochs=1, seed=2, name="20260101-000000-meta")
    import keras

    ds = load_dataset(synth_dir)
    split = pd.read_csv(run / "split.csv").set_index("path")["split"]
    table = ds.table.copy()
    encoding = encoding_for_run(run, table, table["path"].map(split), [("age", "age"), ("sex", "sex"),
                                                                       ("site", "site")])
    model = with_metadata(tiny_cnn(keras, len(ds.classes)), encoding, len(ds.classes))
    model.save(run / "best.keras")
    return run, encoding


def test_report_gallery_shows_each_images_metadata(meta_run, tmp_path):
    from skinzoo.evaluate.evaluation import evaluate_model
    from skinzoo.evaluate.gallery import build_gallery
    from skinzoo.evaluate.predict import resolve_model

    run, encoding = meta_run
    loaded = resolve_model(run)
    evaluation = evaluate_model(loaded, n_bootstrap=10, write=False)
    gallery = build_gallery(loaded, evaluation, per_class=2)
    items = [item for group in gallery.values() for item in group]
    values = pd.read_csv(run / "metadata.csv").set_index("path")
    by_name = {p.split("/")[-1]: p for p in values.index}
    assert items
    for item in items:
        raw = values.loc[by_name[item["name"]]]
        expected = metadata_caption(encoding, encoding.encode_values(
            {k: raw[k] for k in ("age", "sex", "site")}))
        assert item["meta"] == expected  # this image's own values, not one row for all
    assert len({item["meta"] for item in items}) > 1
    report = tmp_path / "report"
    res = CliRunner().invoke(cli, ["evaluate", str(run), "--report", str(report), "--bootstrap", "10"])
    assert res.exit_code == 0, res.output
    assert (report / "report.html").is_file() and list(report.glob("gallery_*.png"))
    assert json.loads((report / "metrics.json").read_text())["n"] == evaluation.metrics["n"]
