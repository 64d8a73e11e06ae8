"""The evaluate/predict/gradcam/calibrate/compare commands through Click's CliRunner."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from skinzoo_cli.main import cli


def _run(args):
    result = CliRunner().invoke(cli, args)
    assert "Traceback" not in (result.output + (result.stderr or "")), result.output
    return result


@pytest.fixture
def run_copy(multiclass_run, tmp_path):
    dst = tmp_path / multiclass_run.name
    shutil.copytree(multiclass_run, dst)
    return dst


def test_evaluate_latest_run_with_report(run_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    shutil.move(run_copy, tmp_path / "runs" / run_copy.name)
    result = _run(["evaluate", "--report", "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    assert "balanced accuracy" in result.output and "95% CI" in result.output
    eval_dir = tmp_path / "runs" / run_copy.name / "eval" / "test"
    assert json.loads((eval_dir / "metrics.json").read_text())["split"] == "test"
    assert (eval_dir / "report" / "report.html").is_file()


def test_evaluate_non_model_file_is_a_clean_error(tmp_path, synth_dir):
    bad = tmp_path / "model.keras"
    bad.write_text("not a model")
    result = _run(["evaluate", str(bad), "--data", str(synth_dir), "--classes", "a,b"])
    assert result.exit_code == 4
    assert "error: cannot load" in result.output and "hint:" in result.output
    result = _run(["evaluate", str(bad)])
    assert result.exit_code == 2 and "--data" in result.output


def test_predict_folder_survives_a_corrupt_file(multiclass_run, synth_dir, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for src in sorted((synth_dir / "images").glob("*.jpg"))[:3]:
        shutil.copy(src, folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = _run(["predict", str(folder), "--model", str(multiclass_run), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    good = [r for r in rows if "probs" in r]
    assert len(good) == 3 and all(abs(sum(r["probs"].values()) - 1) < 1e-4 for r in good)
    assert any(r.get("error") and r["path"].endswith("broken.jpg") for r in rows)
    assert "broken.jpg" in result.stderr
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"nope")
    result = _run(["predict", str(only_bad), "--model", str(multiclass_run)])
    assert result.exit_code == 3 and "no image could be predicted" in result.stderr


def test_predict_table_tta_and_csv(multiclass_run, synth_dir):
    img = str(sorted((synth_dir / "images").glob("*.jpg"))[0])
    result = _run(["predict", img, "--model", str(multiclass_run), "--top-k", "2", "--tta", "4"])
    assert result.exit_code == 0 and result.output.count("\t") == 1
    result = _run(["predict", img, "--model", str(multiclass_run), "--format", "csv"])
    header, row = result.stdout.strip().splitlines()
    assert header.startswith("path,prediction,akiec") and row.startswith(img)


def test_gradcam_writes_overlay_and_heatmap(multiclass_run, synth_dir, tmp_path):
    imgs = [str(p) for p in sorted((synth_dir / "images").glob("*.jpg"))[:3]]
    out = tmp_path / "cams"
    result = _run(["gradcam", *imgs, "--model", str(multiclass_run), "--out", str(out),
                   "--method", "gradcam++", "--class", "mel", "--pair"])
    assert result.exit_code == 0, result.output
    assert "layer: last_conv" in result.output and result.output.count("explained mel") == 3
    from PIL import Image

    for p in imgs:
        stem = p.rsplit("/", 1)[1][:-4]
        assert Image.open(out / f"{stem}_gradcampp.png").size == (256, 256)  # model view, enlarged
        heat = np.load(out / f"{stem}_gradcampp_heatmap.npy")
        assert heat.ndim == 2 and (heat >= 0).all()
    # plain Grad-CAM into the same folder keeps its own names: neither overwrites the other
    result = _run(["gradcam", imgs[0], "--model", str(multiclass_run), "--out", str(out), "--class", "mel"])
    stem = imgs[0].rsplit("/", 1)[1][:-4]
    assert result.exit_code == 0 and (out / f"{stem}_gradcam.png").is_file()
    assert not np.array_equal(np.load(out / f"{stem}_heatmap.npy"), np.load(out / f"{stem}_gradcampp_heatmap.npy"))
    result = _run(["gradcam", imgs[0], "--model", str(multiclass_run), "--class", "nope"])
    assert result.exit_code == 2 and "not one of the model's classes" in result.output


def test_calibrate_then_compare(run_copy, tmp_path):
    result = _run(["calibrate", str(run_copy)])
    assert result.exit_code == 0, result.output
    assert "temperature" in result.output and (run_copy / "calibration.json").is_file()
    result = _run(["evaluate", str(run_copy), "--bootstrap", "50"])
    assert "calibration T=" in result.output
    csv_path = tmp_path / "board.csv"
    result = _run(["compare", str(run_copy), "--markdown", "--csv", str(csv_path)])
    assert result.exit_code == 0 and result.output.startswith("| run |")
    assert csv_path.read_text().startswith("run,model,n,")
    result = _run(["compare", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "hint:" in result.output


def test_tta_option_takes_auto_or_a_view_count(run_copy, synth_dir):
    img = str(sorted((synth_dir / "images").glob("*.jpg"))[0])
    (run_copy / "tta.json").unlink(missing_ok=True)
    result = _run(["predict", img, "--model", str(run_copy), "--tta", "auto"])
    assert result.exit_code == 0 and (run_copy / "tta.json").exists()
    chosen = json.loads((run_copy / "tta.json").read_text())["tta"]
    assert ("averaging 8 test-time views" in result.stderr) == (chosen == 8)
    for bad in ("9", "many"):
        result = _run(["predict", img, "--model", str(run_copy), "--tta", bad])
        assert result.exit_code == 2 and "--tta" in result.output
