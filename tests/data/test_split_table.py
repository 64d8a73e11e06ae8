"""skinzoo.data.splits.read_split_table: the one reader of split.csv as a plain table."""

from __future__ import annotations

import pytest

from skinzoo.data.splits import read_split_table
from skinzoo.errors import DataError


def test_reads_rows_as_strings_without_helper_columns(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("\ufeffimage_id,path,label,group,split\n007, a.jpg ,mel,g1,test\n\n008,b.jpg,nv,g2,train\n")
    table = read_split_table(path)
    assert list(table.columns) == ["image_id", "path", "label", "group", "split"]
    assert table["image_id"].tolist() == ["007", "008"]  # ids stay strings, blank line dropped
    assert table["path"].tolist() == ["a.jpg", "b.jpg"]


def test_a_missing_column_names_the_file_and_the_column(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("image_id,path\n1,a.jpg\n")
    with pytest.raises(DataError, match=r"split.csv has no label, split column") as err:
        read_split_table(path, ("path", "label", "split"), hint="pass --data DATASET")
    assert err.value.hint == "pass --data DATASET"
    with pytest.raises(DataError, match="split.csv has no split column") as err:
        read_split_table(path)
    assert "skinzoo data split" in err.value.hint
    with pytest.raises(DataError, match="cannot read"):
        read_split_table(tmp_path / "missing.csv")


def test_reads_what_write_split_file_writes(tmp_path):
    import pandas as pd

    from skinzoo.data.splits import write_split_file

    table = pd.DataFrame({"image_id": ["a", "b", "c"], "path": ["/d/a.jpg", "/d/b.jpg", "/d/c.jpg"],
                          "label": ["mel", "nv", "nv"], "group": ["g1", "g2", "g3"]})
    split = pd.Series(["train", "val", "test"], index=table.index)
    read = read_split_table(write_split_file(table, split, tmp_path / "split.csv"))
    assert read[read["split"] == "test"].iloc[0]["path"] == "/d/c.jpg"  # what `make demo` reads
    assert read.to_dict("list") == {**table.to_dict("list"), "split": ["train", "val", "test"]}
