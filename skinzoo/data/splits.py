"""Grouped, stratified train/val/test splits and k folds, and the ``split.csv`` file.

Every image of a group (a lesion, a patient) lands on one side only: HAM10000 has up to six
images of one lesion, and a split that separates them scores the model on pictures it has
already seen. Within that constraint each class is spread over the splits in proportion.

The assignment is a seeded greedy one (scikit-learn's ``StratifiedGroupKFold`` only makes equal
folds, not 70/15/15): first every side gets a small group of each class it lacks (rarest
class first, the smallest group to the smallest side), then the other groups, in seeded random
order, each go to the side whose per-class quota they help most. So a class with at least as many groups as there are sides
appears on every side; a class with fewer raises ``DataError`` naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from skinzoo.data.sources import read_csv_table
from skinzoo.errors import DataError, UsageError
from skinzoo.fileio import write_text_atomic

SPLITS = ("train", "val", "test")
SPLIT_FILE_COLUMNS = ["image_id", "path", "label", "group", "split"]


def make_split(table: pd.DataFrame, val: float = 0.15, test: float = 0.15, seed: int = 0) -> pd.Series:
    """``"train"``/``"val"``/``"test"`` per row (index = ``table.index``); ``test=0`` gives two sides."""
    _check_fractions(val, test)
    names = ["train", "val", "test"] if test > 0 else ["train", "val"]
    fractions = [1.0 - val - test, val, test][: len(names)]
    side = _assign_groups(table, fractions, seed, what="a " + "/".join(names) + " split")
    return pd.Series(np.asarray(names, dtype=object)[side], index=table.index, name="split")


def make_folds(table: pd.DataFrame, k: int = 5, seed: int = 0) -> pd.Series:
    """Fold number 0..k-1 per row for k-fold cross-validation (grouped and stratified)."""
    if int(k) != k or k < 2:
        raise UsageError(f"--folds {k} is not a number of folds", "use --folds 2 or more (5 is usual)")
    side = _assign_groups(table, [1.0 / k] * int(k), seed, what=f"{k} folds")
    return pd.Series(side.astype(int), index=table.index, name="fold")


def from_source_split(table: pd.DataFrame, val: float = 0.15, seed: int = 0) -> pd.Series:
    """Use a dataset's own train/val/test folders (the ``source_split`` column of a class-folder
    dataset); when it has no val folder, a grouped, stratified ``val`` share of train is split off.
    """
    if "source_split" not in table:
        raise UsageError("the dataset has no train/val/test folders of its own",
                         "drop --source-split to make a new split")
    split = table["source_split"].astype(str).copy().rename("split")
    if not (split == "val").any():
        train = table[split == "train"]
        _check_fractions(val, 0.0)
        inner = make_split(train, val=val, test=0.0, seed=seed)
        split.loc[inner.index] = inner
    return split


def _check_fractions(val: float, test: float) -> None:
    if not 0 < val < 1:
        raise UsageError(f"--val {val} is not a fraction in (0, 1)", "use e.g. --val 0.15")
    if not 0 <= test < 1:
        raise UsageError(f"--test {test} is not a fraction in [0, 1)", "use e.g. --test 0.15 or 0")
    if val + test > 0.9:
        raise UsageError(f"--val {val} + --test {test} leave {1 - val - test:.0%} for training",
                         "keep val + test at 0.5 or less (0.15 + 0.15 is usual)")


def _assign_groups(table: pd.DataFrame, fractions: list[float], seed: int, what: str) -> np.ndarray:
    """Side index (into ``fractions``) for each row of ``table``; see the module docstring."""
    for col in ("label", "group"):
        if col not in table:
            raise UsageError(f"the table has no {col!r} column", "pass a Dataset.table")
    if table.empty:
        raise DataError("cannot split an empty dataset", "check the dataset with `skinzoo data check`")
    groups, group_of_row = np.unique(table["group"].astype(str).to_numpy(), return_inverse=True)
    classes, class_of_row = np.unique(table["label"].astype(str).to_numpy(), return_inverse=True)
    counts = np.zeros((len(groups), len(classes)))
    np.add.at(counts, (group_of_row, class_of_row), 1)
    n_sides = len(fractions)
    groups_per_class = (counts > 0).sum(axis=0)
    short = [(classes[c], int(groups_per_class[c]), int(counts[:, c].sum()))
             for c in range(len(classes)) if groups_per_class[c] < n_sides]
    if short:
        listed = "; ".join(f"class {name!r} has {g} group(s) ({n} images)" for name, g, n in short)
        raise DataError(f"too few groups (lesions/patients) to make {what}: {listed}; every class "
                        f"needs at least {n_sides} so that each side gets one",
                        "add images of that class, drop or merge it, or use fewer sides "
                        "(--test 0, or fewer --folds)")

    total = counts.sum(axis=0)
    target = np.outer(fractions, total)  # images of each class each side should get
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(groups))
    # Rarest class first: its few groups must be spread before the quotas fill up. Within a
    # class the order stays random; visiting big groups first would balance image counts a bit
    # better but send the multi-image lesions to train and leave val/test with single ones.
    rarity = np.where(counts > 0, groups_per_class[None, :], np.inf).min(axis=1)
    order = order[np.argsort(rarity[order], kind="stable")]
    current = np.zeros_like(target)
    side_of_group = np.full(len(groups), -1)
    sizes = counts.sum(axis=1)
    # Seeds: each side first gets the smallest group of each class it lacks, so the guarantee
    # "every class on every side" costs few images and leaves the big groups to the quotas.
    for c in np.argsort(groups_per_class, kind="stable"):
        free = [g for g in order if counts[g, c] > 0 and side_of_group[g] < 0]
        free.sort(key=lambda g: sizes[g])
        for side in np.argsort(fractions, kind="stable"):  # smallest side gets smallest group
            if current[side, c] == 0 and free:
                g = free.pop(0)
                side_of_group[g] = side
                current[side] += counts[g]
    jitter = rng.random((len(groups), n_sides)) * 1e-9  # seeded tie-breaking
    for g in order:
        if side_of_group[g] >= 0:
            continue
        v = counts[g]
        present = v > 0
        missing = ((current[:, present] == 0) & (target[:, present] > 0)).any(axis=1)
        deficit = ((target - current)[:, present] * v[present] / total[present]).sum(axis=1)
        score = deficit + jitter[g] + np.where(missing, 1e6, 0.0)
        side = int(np.argmax(score))
        side_of_group[g] = side
        current[side] += v
    return side_of_group[group_of_row]


def split_table_summary(table: pd.DataFrame, split: pd.Series, classes=None) -> pd.DataFrame:
    """Images per class (rows, plus ``all``) and per split (columns, plus ``total``)."""
    names = [s for s in SPLITS if s in set(split)] or sorted(set(split))
    names += sorted(set(split) - set(names), key=str)
    counts = pd.crosstab(table["label"], split.reindex(table.index)).reindex(columns=names, fill_value=0)
    if classes is not None:
        counts = counts.reindex([c for c in classes if c in counts.index], fill_value=0)
    counts.columns = [str(c) if not isinstance(c, (int, np.integer)) else f"fold{c}" for c in counts.columns]
    counts["total"] = counts.sum(axis=1)
    counts.loc["all"] = counts.sum(axis=0)
    groups = table.groupby(split.reindex(table.index))["group"].nunique().reindex(names, fill_value=0)
    counts.loc["groups"] = [*groups.to_list(), table["group"].nunique()]
    counts.index.name = "class"
    counts.columns.name = None
    return counts.astype(int)


# --- split.csv -----------------------------------------------------------------------------

def write_split_file(table: pd.DataFrame, split: pd.Series, path) -> Path:
    """Write ``split.csv`` (image_id, path, label, group, split) atomically; folds as ints."""
    if not split.index.equals(table.index):
        raise ValueError("split must be indexed like the table it splits")
    out = table[["image_id", "path", "label", "group"]].assign(split=split.to_numpy())
    return write_text_atomic(path, out.to_csv(index=False))


def read_split_table(path, columns=("path", "split"), hint: str | None = None) -> pd.DataFrame:
    """The rows of a ``split.csv`` as a table of strings, as written (not matched to a dataset:
    that is :func:`read_split_file`), for whoever only needs its paths, labels or sides.

    Read with the dataset reader's robust CSV parsing (BOM, separators, stripped cells, empty
    cells as NaN). A DataError names the file when it cannot be read or lacks one of ``columns``;
    ``hint`` says what to do instead (default: make a new split file).
    """
    path = Path(path)
    table = read_csv_table(path).drop(columns="_line")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path} has no {', '.join(missing)} column",
                        hint or f"make a new one: skinzoo data split DATA --out {path.name}")
    return table


def read_split_file(path, table: pd.DataFrame, allow_missing: bool = False) -> pd.Series:
    """The split stored in ``path``, aligned to ``table`` (index = ``table.index``).

    Checks that the file belongs to this dataset: every row names an image of ``table`` and
    every image of ``table`` is listed (``allow_missing`` tolerates both, for evaluation: rows for
    images not in the table are ignored, e.g. images dropped as unreadable before training, and
    images the file does not list get a missing value, i.e. belong to no split); labels agree
    (with ``label`` or, for a binary task, with the original ``dx``); no group is on two sides.
    Fold files (``split`` holding integers) come back as ints.
    """
    path = Path(path)
    remake = f"make a new one: skinzoo data split DATA --out {path.name}"
    if not path.is_file():
        raise DataError(f"split file {path} does not exist", remake)
    stored = read_csv_table(path)
    missing_cols = [c for c in ("image_id", "split") if c not in stored.columns]
    if missing_cols:
        found = ", ".join(c for c in stored.columns if c != "_line")
        raise DataError(f"split file {path} has no {', '.join(missing_cols)} column; found: {found}; "
                        f"expected: {', '.join(SPLIT_FILE_COLUMNS)}", remake)
    stored = stored.dropna(subset=["image_id"])
    values = stored["split"].fillna("").astype(str)
    folds = values.str.fullmatch(r"\d+").all()
    bad = stored[~values.isin(SPLITS)] if not folds else stored.iloc[0:0]
    if len(bad):
        lines = ", ".join(f"line {ln} {v!r}" for ln, v in zip(bad["_line"][:5], values[bad.index][:5], strict=True))
        raise DataError(f"split file {path} has unknown split values ({lines}); expected "
                        "train/val/test or fold numbers", remake)
    dup = stored["image_id"].duplicated()
    if dup.any():
        raise DataError(f"split file {path} lists {stored['image_id'][dup].iloc[0]} twice "
                        f"(line {stored['_line'][dup].iloc[0]})", remake)
    ids = table["image_id"].astype(str)
    if ids.duplicated().any():
        raise DataError("the dataset's image ids are not unique, so a split file cannot name "
                        f"images by id (e.g. {ids[ids.duplicated()].iloc[0]})",
                        "give every image a unique id")
    known = stored["image_id"].isin(set(ids))
    if not known.all() and not allow_missing:
        extra = stored.loc[~known, "image_id"]
        raise DataError(f"split file {path} lists {len(extra)} image(s) that are not in the dataset "
                        f"(e.g. {', '.join(extra[:3])})",
                        f"the split was made for another dataset or images were removed; {remake}")
    stored = stored[known].set_index("image_id")
    listed = ids.isin(stored.index)
    if not listed.all() and not allow_missing:
        absent = ids[~listed]
        raise DataError(f"the dataset has {len(absent)} image(s) that split file {path} does not "
                        f"list (e.g. {', '.join(absent[:3])})",
                        f"new images must not be put in a split by chance; {remake}")
    if "label" in stored:
        _check_labels(stored, table[listed], ids[listed], path, remake)
    split = stored["split"].reindex(ids.to_numpy())
    split = pd.Series(split.to_numpy(), index=table.index, name="fold" if folds else "split")
    if folds:
        return split.astype(int) if listed.all() else split.astype(float).astype("Int64")
    sides = split.groupby(table["group"]).nunique()
    leaked = sides[sides > 1]
    if len(leaked):
        raise DataError(f"split file {path} puts {len(leaked)} group(s) on two sides (e.g. group "
                        f"{leaked.index[0]!r}): their images would leak between train and test",
                        remake)
    return split


def _check_labels(stored, table, ids, path, remake) -> None:
    said = stored["label"].reindex(ids.to_numpy()).to_numpy()
    label = table["label"].astype(str).to_numpy()
    ok = said == label
    if "dx" in table:  # a split made for the multiclass task is valid for the binary one
        ok |= said == table["dx"].astype(str).to_numpy()
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise DataError(f"labels differ between split file {path} and the dataset for "
                        f"{int((~ok).sum())} image(s) (e.g. {ids.iloc[i]}: the split file says "
                        f"{said[i]!r}, the dataset {label[i]!r})",
                        f"the split was made with other labels (another --task or --label-col?); "
                        f"{remake}")
