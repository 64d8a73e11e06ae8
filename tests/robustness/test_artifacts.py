"""Nothing skinzoo writes or reads can carry code: run directories and caches hold only JSON,
CSV, TOML, .keras, .npy (no pickled objects), PNG/HTML and TensorFlow's own tensor files; the
source tree never unpickles, evals or loads models unsafely."""

from __future__ import annotations

import ast
import json
import shutil
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from badinputs import write_good_jpeg

REPO = Path(__file__).resolve().parents[2]
PICKLE_PROTOCOLS = {bytes([0x80, n]) for n in range(2, 6)}
KERAS_MEMBERS = {"config.json", "metadata.json", "model.weights.h5"}


# --- what a file is -----------------------------------------------------------------------------

def _is_tf_tensor_file(path: Path) -> bool:
    # tf.data file caches: <prefix>.index + <prefix>.data-00000-of-00001 (TensorFlow's tensor
    # bundle format, plain tensors), and skinzoo's <prefix>.owner (the writer's pid).
    name = path.name
    return name.endswith(".index") or ".data-" in name and "-of-" in name


def check_artifact(path: Path) -> str:
    """The file's kind after checking its content matches it; raises AssertionError otherwise."""
    head = path.read_bytes()[:2]
    assert head not in PICKLE_PROTOCOLS, f"{path} is a pickle"
    suffix = path.suffix.lower()
    if suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif suffix == ".csv":
        pd.read_csv(path)
    elif suffix == ".toml":
        tomllib.loads(path.read_text(encoding="utf-8"))
    elif suffix == ".keras":
        with zipfile.ZipFile(path) as z:
            assert set(z.namelist()) <= KERAS_MEMBERS, (path, z.namelist())
            config = json.loads(z.read("config.json"))
        assert "Lambda" not in json.dumps(config), f"{path} holds a Lambda layer"
    elif suffix == ".npy":
        array = np.load(path, allow_pickle=False)  # raises for object arrays
        assert array.dtype != object
    elif suffix == ".png":
        from PIL import Image

        with Image.open(path) as img:
            assert img.format == "PNG"
    elif suffix in (".html", ".md", ".txt"):
        path.read_text(encoding="utf-8")
    elif suffix == ".owner":
        int(path.read_text().split()[0])
    elif _is_tf_tensor_file(path) or "tfevents" in path.name:
        suffix = "tensorflow"
    else:
        raise AssertionError(f"unexpected file kind in a run directory: {path}")
    return suffix


def scan(folder: Path) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        kind = check_artifact(path)
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def test_the_checker_rejects_a_pickle_and_an_object_array(tmp_path):
    import pickle  # noqa: S403 - only to prove the checker would catch one

    (tmp_path / "state.json").write_bytes(pickle.dumps({"a": 1}))
    np.save(tmp_path / "emb.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "model.pkl").write_bytes(b"not really")
    for name in ("state.json", "emb.npy", "model.pkl"):
        with pytest.raises((AssertionError, ValueError)):
            check_artifact(tmp_path / name)


@pytest.mark.slow
def test_a_finished_run_and_its_caches_hold_only_safe_files(skinzoo, messy_run, tmp_path):
    _, run, _ = messy_run
    work = tmp_path / "run"
    shutil.copytree(run, work)
    result = skinzoo("evaluate", work, "--report", "--bootstrap", "20")
    assert result.exit_code == 0, result.output
    kinds = scan(work)
    assert kinds[".keras"] == 1 and kinds[".json"] >= 4 and kinds[".csv"] >= 2
    assert kinds[".toml"] == 1 and kinds[".png"] >= 2 and kinds[".html"] == 1
    cache = run.parent / ".cache"
    cache_kinds = scan(cache)
    assert cache_kinds.get("tensorflow", 0) >= 2, cache_kinds  # --cache disk was used


def test_embedding_cache_is_plain_npy(tmp_path):
    """The two-stage embedding cache (runs/.cache/embeddings) written and read back by
    skinzoo.train.two_stage.compute_embeddings: float32 .npy files that load without pickle."""
    from skinzoo.runtime import tf

    tf()
    from skinzoo.models.registry import build_model
    from skinzoo.models.transfer import feature_extractor
    from skinzoo.train.two_stage import compute_embeddings

    paths = [str(write_good_jpeg(tmp_path / "imgs", f"{i}.jpg", seed=i)) for i in range(5)]
    extractor = feature_extractor(build_model("compact_resnet", 3, input_shape=(32, 32, 3)))
    cache = tmp_path / "runs" / ".cache" / "embeddings"
    common = dict(img_size=32, batch_size=4, cache_dir=cache, model_name="compact_resnet")
    first = [compute_embeddings(extractor, paths, view=v, augment="light", **common)
             for v in (0, 1)]
    assert scan(tmp_path / "runs") == {".npy": 2}
    again = compute_embeddings(extractor, paths, view=0, **common)  # read from the cache
    np.testing.assert_array_equal(again, first[0])
    assert again.dtype == np.float32 and again.shape[0] == 5


# --- the source tree -------------------------------------------------------------------------

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal",
                  "joblib"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}
UNSAFE_ATTRS = {"read_pickle", "to_pickle", "enable_unsafe_deserialization", "unsafe_load"}


def unsafe_uses(source: str, filename: str = "<source>") -> list[str]:
    """Lines of ``source`` that unpickle, eval/exec, or load models/arrays unsafely."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom)
                                                    and node.module else [])
            found += [f"{where} imports {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in UNSAFE_BUILTINS:
                found.append(f"{where} calls {func.id}()")
            if isinstance(func, ast.Attribute) and func.attr in UNSAFE_ATTRS:
                found.append(f"{where} calls .{func.attr}()")
            if isinstance(func, ast.Attribute) and func.attr == "load" and \
                    isinstance(func.value, ast.Name) and func.value.id == "yaml":
                found.append(f"{where} calls yaml.load()")
            for kw in node.keywords:
                value = getattr(kw.value, "value", None)
                if (kw.arg, value) in (("allow_pickle", True), ("safe_mode", False), ("shell", True)):
                    found.append(f"{where} passes {kw.arg}={value}")
    return found


def test_the_source_scanner_finds_each_unsafe_pattern():
    bad = """
import pickle
from joblib import load
x = eval("1")
exec("y = 2")
np.load("a.npy", allow_pickle=True)
keras.models.load_model(p, safe_mode=False)
keras.config.enable_unsafe_deserialization()
df = pd.read_pickle("x")
subprocess.run(cmd, shell=True)
"""
    assert len(unsafe_uses(bad)) == 9
    assert unsafe_uses("model.evaluate(x)\nnp.load(p, allow_pickle=False)\n"
                       "keras.models.load_model(p, safe_mode=not unsafe)\n") == []


def test_source_tree_never_unpickles_evals_or_loads_unsafely():
    files = [p for d in ("skinzoo", "cli", "bench") for p in (REPO / d).rglob("*.py")]
    assert len(files) > 20
    problems = []
    for path in files:
        problems += unsafe_uses(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert problems == []
