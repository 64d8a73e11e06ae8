"""Readers: each format on its own tiny fixture, CSV robustness, folders, binary mapping."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from badinputs import write_good_jpeg, write_good_png

from skinzoo.data.sources import (
    BINARY_MAP,
    ISIC_CLASSES,
    detect_format,
    load_dataset,
    parse_binary_map,
    sort_labels,
)
from skinzoo.errors import DataError, UsageError


def kinds(ds):
    return [p.kind for p in ds.problems]


# --- HAM10000 -------------------------------------------------------------------------------

def test_ham10000_synthetic(synth_dir):
    meta = pd.read_csv(synth_dir / "HAM10000_metadata.csv")
    ds = load_dataset(synth_dir)
    assert ds.format == "ham10000"
    assert ds.classes == sorted(meta["dx"].unique())
    assert len(ds) == len(meta) and not ds.problems
    t = ds.table.set_index("image_id")
    row = meta.iloc[5]
    assert t.at[row.image_id, "group"] == row.lesion_id
    assert t.at[row.image_id, "label"] == row.dx
    assert t.at[row.image_id, "site"] == row.localization
    assert os.path.isabs(t.at[row.image_id, "path"]) and os.path.exists(t.at[row.image_id, "path"])
    assert ds.table["age"].dtype == float
    assert list(ds.class_counts) == [int((meta.dx == c).sum()) for c in ds.classes]
    assert (np.array(ds.classes)[ds.label_index] == ds.table["label"]).all()


def test_ham10000_images_in_part_folders_and_missing_rows(synth_copy):
    images = sorted((synth_copy / "images").glob("*.jpg"))
    part1, part2 = synth_copy / "HAM10000_images_part_1", synth_copy / "HAM10000_images_part_2"
    part1.mkdir()
    part2.mkdir()
    for i, p in enumerate(images):
        shutil.move(p, (part1 if i % 2 else part2) / p.name)
    for p in images[3:5]:
        next(synth_copy.rglob(p.name)).unlink()
    ds = load_dataset(synth_copy)
    assert len(ds) == len(images) - 2
    missing = [p for p in ds.problems if p.kind == "missing_image"]
    assert len(missing) == 2 and all(p.action == "skipped" for p in missing)
    assert "HAM10000_metadata.csv line" in missing[0].where
    assert {p.stem for p in images[3:5]}.isdisjoint(ds.table["image_id"])


def test_ham10000_unknown_dx_and_duplicate_row(synth_copy):
    meta = pd.read_csv(synth_copy / "HAM10000_metadata.csv")
    meta.loc[0, "dx"] = "melanomma"
    meta = pd.concat([meta, meta.iloc[[1]]])
    meta.to_csv(synth_copy / "HAM10000_metadata.csv", index=False)
    ds = load_dataset(synth_copy / "HAM10000_metadata.csv")
    assert "unknown_label" in kinds(ds) and "duplicate_row" in kinds(ds)
    assert len(ds) == len(meta) - 2
    assert "melanomma" not in ds.classes


# --- ISIC 2019 ------------------------------------------------------------------------------

def _isic(root, rows, meta=None):
    cols = ["image", *[c.upper() for c in ISIC_CLASSES], "UNK"]
    records = []
    for image, hot in rows:
        write_good_jpeg(root / "ISIC_2019_Training_Input", f"{image}.jpg", size=16)
        records.append([image, *[1.0 if c in hot else 0.0 for c in cols[1:]]])
    pd.DataFrame(records, columns=cols).to_csv(root / "ISIC_2019_Training_GroundTruth.csv",
                                               index=False)
    if meta is not None:
        pd.DataFrame(meta).to_csv(root / "ISIC_2019_Training_Metadata.csv", index=False)


def test_isic2019_one_hot_and_metadata(tmp_path):
    rows = [("ISIC_0000000", {"NV"}), ("ISIC_0000001", {"MEL"}), ("ISIC_0000002", {"SCC"}),
            ("ISIC_0000003", {"MEL", "NV"}), ("ISIC_0000004", {"UNK"}), ("ISIC_0000005", set()),
            ("ISIC_0000006", {"NV"})]
    meta = dict(image=[r[0] for r in rows], age_approx=[55, None, 70, 40, 30, 20, 60],
                anatom_site_general=["head/neck", "torso", None, "torso", "torso", "torso", "torso"],
                lesion_id=["BCN_1", None, "BCN_2", "BCN_3", "BCN_4", "BCN_5", "BCN_1"],
                sex=["male", "female", None, "male", "male", "male", "male"])
    _isic(tmp_path, rows, meta)
    ds = load_dataset(tmp_path)
    assert ds.format == "isic2019"
    assert ds.classes == ["mel", "nv", "scc"]  # the ISIC order, not sorted
    t = ds.table.set_index("image_id")
    assert list(t.index) == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002", "ISIC_0000006"]
    assert t.at["ISIC_0000000", "group"] == t.at["ISIC_0000006", "group"] == "BCN_1"
    assert t.at["ISIC_0000001", "group"] == "ISIC_0000001"  # no lesion id: its own group
    assert np.isnan(t.at["ISIC_0000001", "age"]) and t.at["ISIC_0000000", "age"] == 55
    assert t.at["ISIC_0000002", "site"] == "unknown"
    assert sorted(kinds(ds)) == ["bad_onehot", "bad_onehot", "missing_group", "unk_label"]


def test_isic_challenge_metadata_train(tmp_path):
    ids = [f"ISIC_{i:07d}" for i in range(10)]
    for i in ids:
        write_good_jpeg(tmp_path / "Train", f"{i}.jpg", size=16)
        write_good_png(tmp_path / "Train", f"{i}_seg.png", size=16)  # masks must not be read
    pd.DataFrame(dict(ID=ids, CLASS=[1, 2, 3, 4, 5, 6, 7, 8, 9, None], SEX=["male"] * 10,
                      AGE=[50] * 10, POSITION=["torso"] * 10)).to_csv(
        tmp_path / "metadataTrain.csv", index=False)
    ds = load_dataset(tmp_path)
    assert ds.format == "isic2019"
    assert ds.table["label"].tolist() == list(ISIC_CLASSES)
    assert ds.classes == list(ISIC_CLASSES)
    assert not ds.table["path"].str.contains("_seg").any()
    assert kinds(ds) == ["bad_label", "bad_label"] and "1..8" in ds.problems[0].message
    assert set(ds.table["site"]) == {"torso"}


# --- generic CSV ----------------------------------------------------------------------------

def test_messy_csv(tmp_path):
    for i in range(6):
        write_good_jpeg(tmp_path / "imgs", f"p{i}.jpg", size=16)
    write_good_png(tmp_path / "imgs" / "sub", "q.png", size=16)
    text = ("\ufefffilename;diagnosis;patient_id;age\n"
            "imgs/p0.jpg;benign;A;41\n"
            "\n"
            "imgs/p1;malignant;A;\n"          # no extension: found as .jpg
            "imgs/p2.jpg;benign;B;NaN\n"
            "imgs/p2.jpg;malignant;B;50\n"    # duplicated id: first kept
            "imgs/p3.jpg;;C;33\n"             # empty label
            "imgs/p4.jpg;?;C;33\n"            # placeholder label
            "imgs\\sub\\q.png;malignant;D;60\n"  # written on Windows
            "imgs/nothere.jpg;benign;E;1\n"
            "../outside.jpg;benign;F;1\n")
    (tmp_path / "labels.csv").write_text(text, encoding="utf-8")
    write_good_jpeg(tmp_path.parent, "outside.jpg", size=16)
    ds = load_dataset(tmp_path)
    assert ds.format == "csv" and ds.classes == ["benign", "malignant"]
    assert ds.table["image_id"].tolist() == ["imgs/p0.jpg", "imgs/p1", "imgs/p2.jpg",
                                             "imgs\\sub\\q.png"]
    assert ds.table["path"].iloc[1].endswith("p1.jpg")
    assert ds.table["group"].tolist() == ["A", "A", "B", "D"]
    assert np.isnan(ds.table["age"].iloc[1]) and np.isnan(ds.table["age"].iloc[2])
    assert sorted(kinds(ds)) == ["duplicate_row", "empty_rows", "missing_image", "missing_label",
                                 "missing_label", "outside_root"]
    by_kind = {p.kind: p for p in ds.problems}
    assert by_kind["duplicate_row"].where == "labels.csv line 6"
    assert "--allow-outside-root" in by_kind["outside_root"].message
    inside = load_dataset(tmp_path, allow_outside_root=True)
    assert "../outside.jpg" in set(inside.table["image_id"])


def test_csv_int_labels_ids_and_explicit_columns(tmp_path):
    for i in range(4):
        write_good_jpeg(tmp_path / "deep" / "er", f"img{i}.png", size=16)
    pd.DataFrame({"Picture": [f"img{i}" for i in range(4)], "Grade": [10, 2, 2, 10],
                  "other": [1, 2, 3, 4]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "t.csv")
    msg = err.value.message
    assert "Picture, Grade, other" in msg and "image_id" in msg
    assert "--image-col/--label-col" in err.value.hint
    with pytest.raises(DataError, match="no column 'pic'"):
        load_dataset(tmp_path / "t.csv", image_col="pic", label_col="Grade")
    ds = load_dataset(tmp_path / "t.csv", image_col="picture", label_col="Grade")
    assert ds.classes == ["2", "10"]  # numeric order, not "10" < "2"
    assert ds.table["group"].tolist() == ds.table["image_id"].tolist()  # ids found below root


def test_all_paths_outside_root_is_an_error(tmp_path):
    data = tmp_path / "labels"
    data.mkdir()
    for i in range(4):
        write_good_jpeg(tmp_path / "images", f"{i}.jpg", size=16)
    pd.DataFrame({"path": [f"../images/{i}.jpg" for i in range(4)],
                  "label": ["a", "b", "a", "b"]}).to_csv(data / "l.csv", index=False)
    with pytest.raises(DataError) as err:
        load_dataset(data / "l.csv")
    assert "outside" in err.value.message and "--allow-outside-root" in err.value.hint
    assert len(load_dataset(data / "l.csv", allow_outside_root=True)) == 4


@pytest.mark.parametrize("content, match", [
    (b"", "is empty"),
    (b"image,label\n", "no rows"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "not a text CSV"),
    (b'image,label\n"a.jpg,x\nb.jpg,y\n', "could not be parsed"),
])
def test_broken_csv_files(tmp_path, content, match):
    (tmp_path / "l.csv").write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_dataset(tmp_path / "l.csv")


def test_latin1_csv_is_read_and_reported(tmp_path):
    for i in range(2):
        write_good_jpeg(tmp_path, f"é{i}.jpg", size=16)
    (tmp_path / "l.csv").write_bytes("image,label\né0.jpg,naevus\né1.jpg,mélanome\n".encode("cp1252"))
    ds = load_dataset(tmp_path / "l.csv")
    assert ds.classes == ["mélanome", "naevus"] and "encoding" in kinds(ds)


# --- class folders --------------------------------------------------------------------------

def test_class_folders(tmp_path):
    for cls, n in (("NORMAL", 3), ("PNEUMONIA", 2), ("COVID", 2), ("LUNG_OPACITY", 1)):
        for i in range(n):
            write_good_jpeg(tmp_path / cls, f"{i}.JPEG", size=16)
    (tmp_path / "EMPTY").mkdir()
    write_good_jpeg(tmp_path, "stray.jpg", size=16)
    (tmp_path / "__MACOSX").mkdir()
    ds = load_dataset(tmp_path)
    assert ds.format == "folders"
    assert ds.classes == ["COVID", "LUNG_OPACITY", "NORMAL", "PNEUMONIA"]
    assert len(ds) == 8 and ds.table["image_id"].is_unique
    assert "NORMAL/0.JPEG" in set(ds.table["image_id"])
    assert sorted(kinds(ds)) == ["empty_class", "no_class_folder"]


def test_split_folders_keep_source_split(tmp_path):
    for split in ("train", "val", "test"):
        for cls in ("cat", "dog"):
            write_good_jpeg(tmp_path / split / cls, "1.jpg", size=16)
    ds = load_dataset(tmp_path)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6
    assert sorted(ds.table["source_split"]) == ["test"] * 2 + ["train"] * 2 + ["val"] * 2
    write_good_jpeg(tmp_path / "extra", "x.jpg", size=16)
    with pytest.raises(DataError, match="mixes split folders"):
        load_dataset(tmp_path)


def test_one_class_is_an_error(tmp_path):
    for i in range(3):
        write_good_jpeg(tmp_path / "only", f"{i}.jpg", size=16)
    with pytest.raises(DataError, match="found only one class 'only'"):
        load_dataset(tmp_path)


def test_layout_detection_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="it is empty"):
        load_dataset(tmp_path)
    (tmp_path / "a.csv").write_text("x\n")
    (tmp_path / "b.csv").write_text("x\n")
    with pytest.raises(DataError, match="several CSV files"):
        detect_format(tmp_path)
    (tmp_path / "img.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="not a CSV"):
        load_dataset(tmp_path / "img.jpg")
    with pytest.raises(UsageError):
        load_dataset(tmp_path, format="dicom")
    with pytest.raises(UsageError):
        load_dataset(tmp_path, task="regression")
    with pytest.raises(DataError, match="needs a folder"):
        load_dataset(tmp_path / "a.csv", format="folders")


# --- binary task ----------------------------------------------------------------------------

def test_binary_mapping(synth_dir):
    multi = load_dataset(synth_dir)
    ds = load_dataset(synth_dir, task="binary")
    assert ds.classes == ["benign", "malignant"]
    expected = multi.table["label"].map(BINARY_MAP)
    assert (ds.table["label"] == expected).all()
    assert (ds.table["dx"] == multi.table["label"]).all()
    malignant = set(ds.table.loc[ds.table.label == "malignant", "dx"])
    assert malignant == {"akiec", "bcc", "mel"}


def test_binary_map_override_and_unmapped(tmp_path):
    for cls in ("NORMAL", "PNEUMONIA", "OTHER"):
        for i in range(2):
            write_good_jpeg(tmp_path / cls, f"{i}.jpg", size=16)
    with pytest.raises(DataError, match="benign/malignant"):
        load_dataset(tmp_path, task="binary")
    ds = load_dataset(tmp_path, task="binary",
                      binary_map=parse_binary_map("normal=benign, PNEUMONIA=malignant"))
    assert ds.class_counts.tolist() == [2, 2]
    assert kinds(ds) == ["unmapped_label"] and "'OTHER'" in ds.problems[0].message
    with pytest.raises(UsageError):
        parse_binary_map("nv=harmless")
    with pytest.raises(UsageError):
        parse_binary_map("nv")


def test_sort_labels():
    assert sort_labels(["10", "2", "1"]) == ["1", "2", "10"]
    assert sort_labels(["b", "A", "a"]) == ["A", "a", "b"]
