"""Splitter properties over many random tables and seeds; split.csv round trip and its checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skinzoo.data.splits import (
    from_source_split,
    make_folds,
    make_split,
    read_split_file,
    split_table_summary,
    write_split_file,
)
from skinzoo.errors import DataError, UsageError


def random_table(rng, n_classes=None, mixed_groups=False) -> pd.DataFrame:
    """Groups of 1-6 images; class sizes from a few groups (rare) to hundreds (common)."""
    n_classes = n_classes or int(rng.integers(2, 8))
    rows = []
    for c in range(n_classes):
        n_groups = int(rng.choice([3, 4, 8, 20, 60, 200]))
        for g in range(n_groups):
            for i in range(int(rng.choice([1, 1, 1, 2, 3, 6]))):
                label = f"c{c}"
                if mixed_groups and rng.random() < 0.1:
                    label = f"c{int(rng.integers(n_classes))}"
                rows.append(dict(image_id=f"c{c}g{g}i{i}", path=f"/d/c{c}g{g}i{i}.jpg",
                                 label=label, group=f"c{c}g{g}"))
    table = pd.DataFrame(rows)
    return table.sample(frac=1, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)


def sides_per_group(table, split):
    return split.groupby(table["group"]).nunique()


@pytest.mark.parametrize("case", range(30))
def test_split_properties(case):
    rng = np.random.default_rng(case)
    table = random_table(rng, mixed_groups=case % 3 == 0)
    val, test = [(0.15, 0.15), (0.2, 0.0), (0.1, 0.2)][case % 3]
    split = make_split(table, val=val, test=test, seed=case)
    assert split.index.equals(table.index)
    assert (sides_per_group(table, split) == 1).all()  # no group on two sides
    names = {"train", "val", "test"} if test else {"train", "val"}
    assert set(split) == names
    if case % 3 != 0:  # with single-label groups every class reaches every side
        assert (pd.crosstab(table["label"], split) > 0).all().all()
    share = split.value_counts(normalize=True)
    assert abs(share["val"] - val) < 0.05
    # Per class: off by at most about one group's worth of images from the target.
    counts = pd.crosstab(table["label"], split)
    target = {"train": 1 - val - test, "val": val, "test": test}
    for label, row in counts.iterrows():
        total = row.sum()
        biggest = table[table.label == label].groupby("group").size().max()
        for side in names:
            assert abs(row[side] - target[side] * total) <= max(2 * biggest, 0.08 * total), (label, side)
    assert split.equals(make_split(table, val=val, test=test, seed=case))


def test_seed_changes_the_split():
    table = random_table(np.random.default_rng(99), n_classes=3)
    a, b = make_split(table, seed=0), make_split(table, seed=1)
    assert not a.equals(b)


def test_rare_class_with_three_groups_lands_everywhere():
    rng = np.random.default_rng(5)
    table = random_table(rng, n_classes=3)
    rare = pd.DataFrame(dict(image_id=["r1", "r2", "r3", "r4"], path=["/r1", "/r2", "/r3", "/r4"],
                             label="rare", group=["R1", "R1", "R2", "R3"]))
    table = pd.concat([table, rare], ignore_index=True)
    for seed in range(10):
        split = make_split(table, seed=seed)
        assert set(split[table.label == "rare"]) == {"train", "val", "test"}
        assert split[table.group == "R1"].nunique() == 1


def test_too_few_groups_names_the_class():
    table = random_table(np.random.default_rng(1), n_classes=2)
    rare = pd.DataFrame(dict(image_id=["r1", "r2"], path=["/r1", "/r2"], label="df",
                             group=["R1", "R2"]))
    table = pd.concat([table, rare], ignore_index=True)
    with pytest.raises(DataError) as err:
        make_split(table)
    assert "class 'df' has 2 group(s)" in err.value.message and "--test 0" in err.value.hint
    assert set(make_split(table, test=0)[table.label == "df"]) == {"train", "val"}
    with pytest.raises(DataError, match="'df'"):
        make_folds(table, k=3)


@pytest.mark.parametrize("val, test", [(0, 0.1), (1.2, 0), (0.15, -0.1), (0.5, 0.45)])
def test_bad_fractions(val, test):
    table = random_table(np.random.default_rng(0), n_classes=2)
    with pytest.raises(UsageError):
        make_split(table, val=val, test=test)


def test_folds():
    table = random_table(np.random.default_rng(3), n_classes=4)
    folds = make_folds(table, k=5, seed=2)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    assert (sides_per_group(table, folds) == 1).all()
    assert (pd.crosstab(table["label"], folds) > 0).all().all()
    sizes = folds.value_counts(normalize=True)
    assert sizes.between(0.15, 0.25).all()
    assert folds.equals(make_folds(table, k=5, seed=2))
    with pytest.raises(UsageError):
        make_folds(table, k=1)


def test_summary_counts():
    table = random_table(np.random.default_rng(4), n_classes=3)
    split = make_split(table)
    summary = split_table_summary(table, split, classes=["c2", "c0", "c1"])
    assert list(summary.columns) == ["train", "val", "test", "total"]
    assert list(summary.index) == ["c2", "c0", "c1", "all", "groups"]
    assert summary.at["all", "total"] == len(table)
    assert summary.at["c0", "val"] == int(((table.label == "c0") & (split == "val")).sum())
    assert summary.at["groups", "total"] == table.group.nunique()


def test_from_source_split_carves_val_from_train():
    table = random_table(np.random.default_rng(6), n_classes=2)
    table["source_split"] = np.where(table.index % 5 == 0, "test", "train")
    table.loc[table.source_split == "test", "group"] += "_t"  # test groups are their own
    split = from_source_split(table, val=0.2)
    assert (split[table.source_split == "test"] == "test").all()
    assert set(split[table.source_split == "train"]) == {"train", "val"}
    with pytest.raises(UsageError):
        from_source_split(table.drop(columns="source_split"))


# --- split.csv ------------------------------------------------------------------------------

@pytest.fixture
def table_and_split():
    table = random_table(np.random.default_rng(7), n_classes=3)
    return table, make_split(table, seed=3)


def test_split_file_round_trip(tmp_path, table_and_split):
    table, split = table_and_split
    path = write_split_file(table, split, tmp_path / "split.csv")
    stored = pd.read_csv(path)
    assert list(stored.columns) == ["image_id", "path", "label", "group", "split"]
    shuffled = table.sample(frac=1, random_state=0)
    back = read_split_file(path, shuffled)
    assert back.index.equals(shuffled.index)
    assert back.equals(split.loc[shuffled.index])
    folds = make_folds(table, k=3)
    write_split_file(table, folds, tmp_path / "folds.csv")
    assert read_split_file(tmp_path / "folds.csv", table).equals(folds)


def test_split_file_made_for_multiclass_works_for_binary(tmp_path, table_and_split):
    table, split = table_and_split
    write_split_file(table, split, tmp_path / "split.csv")
    binary = table.assign(dx=table.label, label=np.where(table.label == "c0", "malignant", "benign"))
    assert read_split_file(tmp_path / "split.csv", binary).equals(split)


def test_split_file_checks(tmp_path, table_and_split):
    table, split = table_and_split
    path = tmp_path / "split.csv"
    with pytest.raises(DataError, match="does not exist"):
        read_split_file(path, table)
    write_split_file(table, split, path)
    with pytest.raises(DataError, match="not in the dataset"):
        read_split_file(path, table.iloc[5:])
    assert read_split_file(path, table.iloc[5:], allow_missing=True).equals(split.iloc[5:])
    more = pd.concat([table, table.iloc[:1].assign(image_id="new", group="new")])
    with pytest.raises(DataError, match="does not list"):
        read_split_file(path, more.reset_index(drop=True))
    tolerant = read_split_file(path, more.reset_index(drop=True), allow_missing=True)
    assert tolerant.iloc[:-1].tolist() == split.tolist() and pd.isna(tolerant.iloc[-1])
    relabelled = table.assign(label=table.label.where(table.index != 0, "other"))
    with pytest.raises(DataError, match="labels differ") as err:
        read_split_file(path, relabelled)
    assert table.image_id[0] in err.value.message

    stored = pd.read_csv(path)
    leak = stored.copy()
    g = leak.group.value_counts().index[0]  # a group with several images
    first = leak.index[leak.group == g][0]
    leak.loc[first, "split"] = "test" if leak.loc[first, "split"] != "test" else "train"
    leak.to_csv(path, index=False)
    with pytest.raises(DataError, match="two sides"):
        read_split_file(path, table)
    stored.assign(split=stored.split.replace("val", "validate")).to_csv(path, index=False)
    with pytest.raises(DataError, match="unknown split values"):
        read_split_file(path, table)
    stored.drop(columns="split").to_csv(path, index=False)
    with pytest.raises(DataError, match="no split column"):
        read_split_file(path, table)
