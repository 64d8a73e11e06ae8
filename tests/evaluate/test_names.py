"""Where class names and result folders come from (issue 15's small defects): class names
from a classes.json / labels.txt beside a bare model file, and `evaluate --data other/labels.csv`
filed under the dataset's name, not the CSV file's."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from skinzoo_cli.main import cli

from skinzoo.errors import UsageError
from skinzoo.evaluate.predict import classes_beside, dataset_name

HAM = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def test_dataset_name(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "labels.csv").write_text("image,label\n")
    (tmp_path / "other" / "extra_test.csv").write_text("image,label\n")
    assert dataset_name(tmp_path / "other" / "labels.csv") == "other"
    assert dataset_name(tmp_path / "other" / "extra_test.csv") == "other-extra_test"
    assert dataset_name(tmp_path / "other") == "other"
    assert dataset_name(str(tmp_path / "other") + "/") == "other"


@pytest.mark.parametrize("name, text", [
    ("labels.txt", "\ufeffakiec\nbcc\n\nbkl\ndf\nmel\nnv\nvasc\n"),
    ("classes.json", json.dumps({"classes": HAM, "task": "multiclass"})),
    ("classes.json", json.dumps(HAM)),
])
def test_classes_beside_a_model(tmp_path, name, text):
    (tmp_path / name).write_text(text, encoding="utf-8")
    names, source = classes_beside(tmp_path / "model.keras")
    assert names == HAM and source == tmp_path / name


def test_unusable_class_file_is_an_error_not_class_numbers(tmp_path):
    (tmp_path / "labels.txt").write_text("mel\nmel\n")
    with pytest.raises(UsageError, match="repeats a class name"):
        classes_beside(tmp_path / "model.keras")
    assert classes_beside(tmp_path / "sub" / "model.keras") == (None, None)


def test_bare_model_gets_names_from_labels_txt(multiclass_run, synth_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(multiclass_run / "best.keras", bare / "model.keras")
    img = str(sorted((synth_dir / "images").glob("*.jpg"))[0])
    before = CliRunner().invoke(cli, ["predict", img, "--model", str(bare / "model.keras"), "--format", "csv"])
    assert before.exit_code == 0 and "class_0" in before.stdout
    (bare / "labels.txt").write_text("\n".join(HAM) + "\n")
    after = CliRunner().invoke(cli, ["predict", img, "--model", str(bare / "model.keras"), "--format", "csv"])
    assert after.exit_code == 0, after.output
    assert after.stdout.splitlines()[0] == "path,prediction," + ",".join(HAM)
    assert f"class names from {bare / 'labels.txt'}" in after.output


def test_evaluate_other_csv_is_filed_under_the_dataset(run_factory, synth_dir, tmp_path):
    run = run_factory(tmp_path / "runs")
    other = tmp_path / "other"
    shutil.copytree(synth_dir, other)
    meta = (other / "HAM10000_metadata.csv").read_text().splitlines()
    (other / "labels.csv").write_text("image,label\n" + "".join(
        f"images/{row.split(',')[1]}.jpg,{row.split(',')[2]}\n" for row in meta[1:]))
    (other / "HAM10000_metadata.csv").unlink()
    result = CliRunner().invoke(cli, ["evaluate", str(run), "--data", str(other / "labels.csv"),
                                      "--split", "all", "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    assert (run / "eval" / "all-other" / "metrics.json").is_file()
    assert not (run / "eval" / "all-labels.csv").exists()
