"""Metadata encoding: fitted on training rows only, explicit missing indicators, JSON round trip,
CSV columns, the pipeline's two-input elements, and the demo data's metadata signal."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from skinzoo.data.metadata import (
    MetadataEncoding,
    attach_columns,
    encode_by_path,
    fit_encoding,
    parse_meta_values,
    read_values,
    requested_fields,
    write_values,
)
from skinzoo.errors import DataError, UsageError

TRAIN = pd.DataFrame({"age": [50.0, np.nan, 30.0, 80.0], "sex": ["male", "unknown", "female", "male"],
                      "site": ["back", "face", "back", None]})


@pytest.fixture
def encoding():
    return fit_encoding(TRAIN, requested_fields("age,sex,site"))


def test_layout_scaling_and_missing_indicators(encoding):
    assert encoding.feature_names() == ["age", "age_missing", "sex=female", "sex=male", "sex_missing",
                                        "site=back", "site=face", "site_missing"]
    x = encoding.encode_table(TRAIN)
    assert x.dtype == np.float32 and x.shape == (4, 8)
    np.testing.assert_allclose(x[0], [0.5, 0, 0, 1, 0, 1, 0, 0])  # age/100, one-hot, no missing
    np.testing.assert_allclose(x[1], [0, 1, 0, 0, 1, 0, 1, 0])  # NaN age and "unknown" sex: missing
    np.testing.assert_allclose(x[3], [0.8, 0, 0, 1, 0, 0, 0, 1])  # empty site: missing
    assert encoding.missing_columns() == [1, 4, 7]
    assert encoding.field_of_column() == [0, 0, 1, 1, 1, 2, 2, 2]


def test_categories_come_from_training_rows_only_and_unseen_is_missing_with_one_warning(encoding, caplog):
    val = pd.DataFrame({"age": ["61", "x"], "sex": ["Female", "other"], "site": ["scalp", "ear"]})
    with caplog.at_level(logging.WARNING):
        x = encoding.encode_table(val, "the val split")
    assert "scalp" not in encoding.fields[2].categories  # nothing learned from validation
    np.testing.assert_allclose(x[0], [0.61, 0, 1, 0, 0, 0, 0, 1])  # case-insensitive; unseen site
    np.testing.assert_allclose(x[1], [0, 1, 0, 0, 1, 0, 0, 1])
    warnings = [r for r in caplog.records if "never saw" in r.getMessage()]
    assert len(warnings) == 1
    assert "other" in warnings[0].getMessage() and "ear" in warnings[0].getMessage()


def test_age_scale_is_fixed_but_other_numbers_use_the_training_maximum():
    table = pd.DataFrame({"age": [20.0, 40.0], "dose": ["2", "8"]})
    enc = fit_encoding(table, requested_fields("age", "dose"))
    assert enc.fields[0].scale == 100.0 and enc.fields[1].scale == 8.0
    np.testing.assert_allclose(enc.encode_values({"age": "55", "dose": "4"}), [[0.55, 0, 0.5, 0]])


def test_json_round_trip_and_damaged_files(encoding, tmp_path):
    path = tmp_path / "metadata.json"
    encoding.save(path)
    again = MetadataEncoding.load(path)
    assert again == encoding
    np.testing.assert_array_equal(again.encode_table(TRAIN), encoding.encode_table(TRAIN))
    for text in ("{", "[]", '{"fields": [{"name": "age", "kind": "weird", "column": "age"}]}',
                 '{"fields": [{"name": "a", "column": "a", "kind": "numeric", "scale": -1}]}'):
        path.write_text(text)
        with pytest.raises(UsageError, match="metadata"):
            MetadataEncoding.load(path)


def test_values_by_name(encoding):
    x = encoding.encode_values(parse_meta_values("age=55, sex=female,site=back"))
    np.testing.assert_allclose(x, [[0.55, 0, 1, 0, 0, 1, 0, 0]])
    np.testing.assert_allclose(encoding.encode_values({}), [[0, 1, 0, 0, 1, 0, 0, 1]])
    with pytest.raises(UsageError, match="unknown metadata field"):
        encoding.encode_values({"colour": "red"})
    with pytest.raises(UsageError, match="name=value"):
        parse_meta_values("age55")


def test_field_choice_errors():
    assert requested_fields("sex", "fitz,dose=rx_dose") == [("sex", "sex"), ("fitz", "fitz"),
                                                           ("dose", "rx_dose")]
    with pytest.raises(UsageError, match="not one of age, sex, site"):
        requested_fields("age,weight")
    with pytest.raises(UsageError, match="twice"):
        requested_fields("age,age")
    with pytest.raises(UsageError, match="twice"):
        requested_fields("sex", "sex")
    with pytest.raises(DataError, match="no 'fitz' column"):
        fit_encoding(TRAIN, [("fitz", "fitz")])
    with pytest.raises(DataError, match="missing for every"):
        fit_encoding(pd.DataFrame({"sex": ["unknown", None]}), [("sex", "sex")])


def test_csv_columns_are_attached_by_image_id(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label,fitz,skin_age\na.jpg,x,II,30\nb.jpg,y,,\nc.jpg,x,IV,70\n")
    table = pd.DataFrame({"image_id": ["c.jpg", "a.jpg"], "path": ["/c", "/a"]})
    out = attach_columns(table, csv, ["fitz", "skin_age"])
    assert out["fitz"].tolist() == ["IV", "II"] and out["skin_age"].tolist() == ["70", "30"]
    enc = fit_encoding(out, requested_fields(None, "fitz,age=skin_age"))
    assert [f.kind for f in enc.fields] == ["category", "numeric"] and enc.fields[1].scale == 100
    with pytest.raises(DataError, match="no column"):
        attach_columns(table, csv, ["nope"])
    with pytest.raises(DataError, match="class folders"):
        attach_columns(table, tmp_path, ["fitz"])


def test_run_values_file_round_trip(encoding, tmp_path):
    table = TRAIN.assign(path=[f"/img/{i}.jpg" for i in range(4)])
    write_values(table, encoding, tmp_path / "metadata.csv")
    values = read_values(tmp_path / "metadata.csv")
    x = encode_by_path(encoding, values, ["/img/3.jpg", "/img/0.jpg", "/elsewhere.jpg"])
    np.testing.assert_allclose(x[:2], encoding.encode_table(TRAIN)[[3, 0]])
    np.testing.assert_allclose(x[2], encoding.encode_values({})[0])  # unknown image: all missing


def test_pipeline_yields_named_inputs_only_with_metadata(synth_dir):
    from skinzoo.data.pipeline import make_dataset

    table = pd.read_csv(synth_dir / "HAM10000_metadata.csv").head(10)
    paths = [str(synth_dir / "images" / f"{i}.jpg") for i in table["image_id"]]
    labels = np.arange(10) % 7
    meta = np.arange(30, dtype=np.float32).reshape(10, 3)
    plain = make_dataset(paths, labels, 7, 32, 4, training=False)
    fused = make_dataset(paths, labels, 7, 32, 4, training=False, metadata=meta)
    (x0, y0), (x1, y1) = next(iter(plain)), next(iter(fused))
    assert set(x1) == {"image", "metadata"}
    np.testing.assert_array_equal(x1["image"], x0)
    np.testing.assert_array_equal(x1["metadata"], meta[:4])
    np.testing.assert_array_equal(y1, y0)
    train = make_dataset(paths, labels, 7, 32, 4, training=True, metadata=meta, oversample=True,
                         sample_weights=np.ones(10))
    x2, y2, w2 = next(iter(train))
    rows = [int(r[0]) // 3 for r in x2["metadata"].numpy()]  # which sample each row came from
    assert [int(np.argmax(t)) for t in y2.numpy()] == [int(labels[r]) for r in rows]  # aligned
    images_only = make_dataset(paths, None, 7, 32, 4, training=False, metadata=meta)
    assert set(next(iter(images_only))) == {"image", "metadata"}
    with pytest.raises(UsageError, match="metadata has shape"):
        make_dataset(paths, labels, 7, 32, 4, training=False, metadata=meta[:3])


def test_demo_metadata_carries_class_signal(synth_dir):
    from skinzoo.data.synth import TYPICAL_SITES

    table = pd.read_csv(synth_dir / "HAM10000_metadata.csv")
    lesions = table.drop_duplicates("lesion_id")
    typical = [site in TYPICAL_SITES[dx] for dx, site in zip(lesions["dx"], lesions["localization"],
                                                              strict=True)]
    assert np.mean(typical) > 0.5  # uniform sites would give ~0.2
    ages = lesions.groupby("dx")["age"].mean()
    assert ages["nv"] < ages["bcc"] and ages["nv"] < ages["akiec"]
    assert table["sex"].isin(["male", "female"]).all()


def test_layouts_of_other_models_offset_and_no_indicator(tmp_path):
    data = {"fields": [
        {"name": "age", "column": "age", "kind": "numeric", "scale": 10, "offset": 50,
         "missing_indicator": False},
        {"name": "sex", "column": "sex", "kind": "category", "categories": ["Female", "Male"]}]}
    enc = MetadataEncoding.from_dict(data)
    assert enc.width == 4 and enc.feature_names() == ["age", "sex=female", "sex=male", "sex_missing"]
    assert enc.missing_columns() == [3]
    np.testing.assert_allclose(enc.encode_values({"age": "70", "sex": "MALE"}), [[2.0, 0, 1, 0]])
    np.testing.assert_allclose(enc.encode_values({}), [[0, 0, 0, 1]])  # no age indicator: zero
    assert MetadataEncoding.from_dict(enc.to_dict()) == enc
    with pytest.raises(UsageError, match="malformed"):
        MetadataEncoding.from_dict({"fields": [{"name": "a", "column": "a", "kind": "numeric",
                                                "scale": 1, "missing_indicator": "no"}]})


def test_isic_site_names_map_onto_a_ham_trained_encoding_and_back(encoding, caplog):
    """ISIC 2019's coarse sites are encoded as the HAM10000 site the model knows (posterior torso
    -> back, head/neck -> face), HAM10000's sites onto an ISIC-trained encoding; a site with no
    known equivalent is still missing, with the warning."""
    isic = pd.DataFrame({"age": [50.0] * 4, "sex": ["male"] * 4,
                         "site": ["posterior torso", "head/neck", "palms/soles", "Back"]})
    with caplog.at_level(logging.WARNING):
        x = encoding.encode_table(isic)
    np.testing.assert_allclose(x[0, 5:], [1, 0, 0])  # back
    np.testing.assert_allclose(x[1, 5:], [0, 1, 0])  # face
    np.testing.assert_allclose(x[2, 5:], [0, 0, 1])  # palms/soles: no equivalent known -> missing
    np.testing.assert_allclose(x[3, 5:], [1, 0, 0])  # case does not matter
    assert "palms/soles" in caplog.text and "posterior torso" not in caplog.text
    isic_trained = fit_encoding(pd.DataFrame({"site": ["anterior torso", "head/neck"]}),
                                requested_fields("site"))
    y = isic_trained.encode_table(pd.DataFrame({"site": ["chest", "scalp", "trunk"]}))
    np.testing.assert_allclose(y, [[1, 0, 0], [0, 1, 0], [1, 0, 0]])
