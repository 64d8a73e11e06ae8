"""`skinzoo data preview` and `skinzoo data augment` through the CLI, on the synthetic fixture."""

import pandas as pd
from click.testing import CliRunner
from PIL import Image
from skinzoo_cli.main import cli


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_preview_writes_decodable_grids(synth_dir, tmp_path):
    result = invoke("data", "preview", synth_dir, "--out", tmp_path / "p", "--n", 3, "--img-size", 32,
                    "--hair-removal", "--augment", "heavy")
    assert result.exit_code == 0, result.output
    for name in ("augment.png", "hair_removal.png"):
        with Image.open(tmp_path / "p" / name) as img:
            img.load()
            assert img.width > 3 * 32 and img.height >= 3 * 32


def test_preview_with_nothing_to_show_is_a_usage_error(synth_dir, tmp_path):
    result = invoke("data", "preview", synth_dir, "--out", tmp_path / "p", "--augment", "none")
    assert result.exit_code == 2 and "nothing to preview" in result.output


def test_augment_tops_up_training_classes_only(synth_dir, tmp_path):
    split_file = tmp_path / "split.csv"
    assert invoke("data", "split", synth_dir, "--out", split_file).exit_code == 0
    split = pd.read_csv(split_file)
    train_counts = split[split["split"] == "train"]["label"].value_counts()
    out = tmp_path / "aug"
    result = invoke("data", "augment", synth_dir, out, "--to-count", 30, "--img-size", 32,
                    "--split-file", split_file)
    assert result.exit_code == 0, result.output
    labels = pd.read_csv(out / "labels.csv")
    after = labels["label"].value_counts()
    for cls, n in train_counts.items():
        assert after[cls] == max(n, 30), cls  # topped up, never cut down
    manifest = pd.read_csv(out / "images" / "manifest.csv")
    assert len(manifest) == len(labels)
    sources = set(manifest["source_file"])
    held_out = set(split[split["split"] != "train"]["path"])
    assert not sources & held_out  # validation/test images are never copied or augmented
    new = manifest[manifest["augment"] != "none"]
    assert len(new) == (after - train_counts).sum()
    for f in new["file"].head(5):
        with Image.open(out / f) as img:
            assert img.size == (32, 32)
    again = invoke("data", "augment", synth_dir, out, "--to-count", 30)
    assert again.exit_code == 2 and "already holds" in again.output
