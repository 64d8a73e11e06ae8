"""`python -m tools.import_graph` on a tiny synthetic package: cycles found, exit codes, marks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _package(root: Path, files: dict) -> None:
    pkg = root / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, text in files.items():
        (pkg / name).write_text(text)


def _run(root: Path, package: str = "pkg"):
    return subprocess.run([sys.executable, "-m", "tools.import_graph", "--root", str(root), package],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    _package(tmp_path, {
        "a.py": "from pkg import b\n",
        "b.py": "def late():\n    from pkg.c import value\n    return value\n",
        "c.py": "from . import a\nvalue = 1\n",
    })
    done = _run(tmp_path)
    assert done.returncode == 1, done.stderr
    assert "cycles: 1" in done.stdout
    assert "pkg.a <-> pkg.b <-> pkg.c" in done.stdout
    assert "pkg.b -> pkg.c  (line 2, in function)" in done.stdout
    assert "pkg.c -> pkg.a  (line 1, top-level)" in done.stdout  # relative import resolved


def test_no_cycle_exits_0(tmp_path):
    _package(tmp_path, {
        "a.py": "from pkg import b\n",
        "b.py": "def late():\n    from pkg.c import value\n    return value\n",
        "c.py": "value = 1\n",
    })
    done = _run(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cycles: 0" in done.stdout
    assert "2 imports between them (1 top-level, 1 in functions)" in done.stdout


def test_an_import_from_a_lower_layer_into_a_higher_one_is_reported(tmp_path):
    for folder in ("skinzoo", "skinzoo/data", "skinzoo/train"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "skinzoo/train/fit.py").write_text("from skinzoo.data import pipeline\n")
    (tmp_path / "skinzoo/data/pipeline.py").write_text("def f():\n    import skinzoo.train.fit\n")
    done = _run(tmp_path, "skinzoo")
    assert done.returncode == 1  # the two also form a cycle
    assert "arrows up a layer: 1" in done.stdout
    assert ("data -> train: skinzoo.data.pipeline -> skinzoo.train.fit  (line 2, in function)"
            in done.stdout)
