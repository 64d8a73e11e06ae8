"""`skinzoo data download` against a local HTTP server on 127.0.0.1 serving archives made here:
resume after a cut, a server that ignores ranges, wrong size, wrong checksum, server error,
offline, zip slip, and the layouts `--format auto` reads afterwards. Never the internet."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from skinzoo.data import download as dl


class Server:
    """Serves ``files`` (name -> bytes) with HTTP Range support and scripted misbehaviour:
    ``cut[name] = n`` sends n bytes of the next response then drops the connection;
    ``lie_total[name]`` announces a wrong full size in Content-Range; ``status[name]`` answers
    with that error code; ``ignore_range`` answers 200 with the whole file."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.lie_total: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                if name in server.status:
                    self.send_error(server.status[name])
                    return
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng and not server.ignore_range else 0
                if rng and not server.ignore_range and start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:]
                partial = bool(rng) and not server.ignore_range
                self.send_response(206 if partial else 200)
                self.send_header("Content-Length", str(len(body)))
                if partial:
                    total = server.lie_total.get(name, len(data))
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{total}")
                self.end_headers()
                cut = server.cut.pop(name, None)
                self.wfile.write(body[:cut] if cut is not None else body)
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connecting is refused at once


def payload(n: int = 50_000, seed: int = 1) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + b"end"


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# --- fetch -----------------------------------------------------------------------------------


def test_cut_transfer_resumes_with_range(server, tmp_path):
    data = payload()
    server.files["a.bin"] = data
    server.cut["a.bin"] = 20_000
    target = dl.fetch(f"{server.url}/a.bin", tmp_path / "a.bin", retries=2)
    assert target.read_bytes() == data
    assert server.requests == [("a.bin", None), ("a.bin", "bytes=20000-")]
    assert not (tmp_path / "a.bin.part").exists()


def test_cut_without_retries_keeps_part_for_the_next_run(server, tmp_path):
    data = payload()
    server.files["a.bin"] = data
    server.cut["a.bin"] = 12_345
    with pytest.raises(dl.DownloadError) as err:
        dl.fetch(f"{server.url}/a.bin", tmp_path / "a.bin", retries=0)
    assert "stopped at 12,345 bytes" in err.value.message and "resumes from byte 12,345" in err.value.hint
    assert (tmp_path / "a.bin.part").stat().st_size == 12_345
    dl.fetch(f"{server.url}/a.bin", tmp_path / "a.bin", retries=0)  # the next run
    assert (tmp_path / "a.bin").read_bytes() == data
    assert server.requests[-1] == ("a.bin", "bytes=12345-")


def test_server_ignoring_range_starts_over(server, tmp_path):
    data = payload()
    server.files["a.bin"] = data
    server.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(b"x" * 999)  # would corrupt the file if appended to
    dl.fetch(f"{server.url}/a.bin", tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == data


def test_complete_part_is_not_fetched_again(server, tmp_path):
    data = payload()
    server.files["a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(data)  # killed just before the rename
    dl.fetch(f"{server.url}/a.bin", tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == data
    assert server.requests == [("a.bin", f"bytes={len(data)}-")]  # answered 416: nothing sent


def test_wrong_size_is_refused(server, tmp_path):
    data = payload()
    server.files["a.bin"] = data
    server.lie_total["a.bin"] = len(data) + 500  # the server's file "changed" between requests
    (tmp_path / "a.bin.part").write_bytes(data[:1000])
    with pytest.raises(dl.DownloadError) as err:
        dl.fetch(f"{server.url}/a.bin", tmp_path / "a.bin")
    assert f"is {len(data):,} bytes but the server announced {len(data) + 500:,}" in err.value.message
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "a.bin.part").exists()


def test_server_error_is_one_clear_error(server, tmp_path):
    server.status["a.bin"] = 500
    with pytest.raises(dl.DownloadError) as err:
        dl.fetch(f"{server.url}/a.bin", tmp_path / "a.bin")
    assert "answered 500" in err.value.message and f"{server.url}/a.bin" in err.value.message
    assert err.value.exit_code == 7 and not (tmp_path / "a.bin").exists()


def test_offline_fails_at_once_naming_the_url(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/HAM10000_images_part_1.zip"
    started = time.monotonic()
    with pytest.raises(dl.OfflineError) as err:
        dl.fetch(url, tmp_path / "downloads" / "HAM10000_images_part_1.zip")
    assert time.monotonic() - started < 2
    assert url in err.value.message and "refused" in err.value.message.lower()
    assert "by hand" in err.value.hint and str(tmp_path / "downloads") in err.value.hint


# --- checksums and unpacking --------------------------------------------------------------------


def test_checksum_recorded_then_enforced(tmp_path):
    sums = tmp_path / "SHA256SUMS"
    f = tmp_path / "a.zip"
    f.write_bytes(b"first")
    digest = dl.verify_checksum(f, sums)
    assert digest == hashlib.sha256(b"first").hexdigest()
    assert sums.read_text() == f"{digest}  a.zip\n"  # sha256sum -c format
    f.write_bytes(b"tampered")
    with pytest.raises(dl.DownloadError) as err:
        dl.verify_checksum(f, sums)
    assert "does not match the SHA-256 recorded" in err.value.message
    assert not f.exists() and (tmp_path / "a.zip.sha256-mismatch").read_bytes() == b"tampered"


def test_zip_slip_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip({"ok.txt": b"ok", "../../escaped.txt": b"x"}))
    with pytest.raises(dl.DataError, match="outside the folder"):
        dl.safe_unpack(archive, tmp_path / "out" / "evil")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out" / "evil").exists()


def test_unpack_drops_the_archive_named_top_folder(tmp_path):
    archive = tmp_path / "ISIC_X.zip"
    archive.write_bytes(make_zip({"ISIC_X/a.jpg": b"1", "ISIC_X/sub/b.jpg": b"2", "__MACOSX/._a.jpg": b""}))
    assert dl.safe_unpack(archive, tmp_path / "ISIC_X") == 2
    assert sorted(p.relative_to(tmp_path / "ISIC_X").as_posix() for p in (tmp_path / "ISIC_X").rglob("*.jpg")) \
        == ["a.jpg", "sub/b.jpg"]


def test_damaged_archive_is_a_clear_error(tmp_path):
    archive = tmp_path / "cut.zip"
    archive.write_bytes(make_zip({"a.jpg": payload(5000)})[:-40])
    with pytest.raises(dl.DataError, match="not a complete zip archive"):
        dl.safe_unpack(archive, tmp_path / "cut")


# --- whole sets, through the CLI ------------------------------------------------------------------


def _ham_files(synth_dir: Path) -> dict[str, bytes]:
    images = sorted((synth_dir / "images").glob("*.jpg"))
    half = len(images) // 2
    return {
        "HAM10000_images_part_1.zip": make_zip({p.name: p.read_bytes() for p in images[:half]}),
        "HAM10000_images_part_2.zip": make_zip({p.name: p.read_bytes() for p in images[half:]}),
        "HAM10000_metadata.csv": (synth_dir / "HAM10000_metadata.csv").read_bytes(),
    }


def test_ham10000_end_to_end_then_format_auto_reads_it(server, tmp_path, synth_dir):
    from skinzoo_cli.main import cli

    from skinzoo.data.sources import load_dataset

    server.files.update(_ham_files(synth_dir))
    server.cut["HAM10000_images_part_2.zip"] = 3000  # one cut on the way: resumed automatically
    root = tmp_path / "ham"
    result = CliRunner().invoke(cli, ["data", "download", "ham10000", "--to", str(root),
                                      "--mirror", server.url])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().splitlines()[-1] == f"  skinzoo train --data {root}"
    ds = load_dataset(root)
    assert ds.format == "ham10000" and len(ds.table) == 140
    sums = dl.read_checksums(root / "downloads" / "SHA256SUMS")
    assert sums["HAM10000_metadata.csv"] == hashlib.sha256(server.files["HAM10000_metadata.csv"]).hexdigest()
    assert len(sums) == 3
    # Second run: nothing fetched, everything checked against the recorded checksums.
    n_requests = len(server.requests)
    again = CliRunner().invoke(cli, ["data", "download", "ham10000", "--to", str(root), "--mirror", server.url])
    assert again.exit_code == 0 and len(server.requests) == n_requests
    assert "already there (checked)" in again.output


def test_redownload_with_other_bytes_fails_the_checksum(server, tmp_path, synth_dir):
    files = _ham_files(synth_dir)
    server.files.update(files)
    root = tmp_path / "ham"
    dl.download_dataset("ham10000", root, mirror=server.url)
    (root / "downloads" / "HAM10000_metadata.csv").unlink()
    server.files["HAM10000_metadata.csv"] = files["HAM10000_metadata.csv"] + b"\n"
    with pytest.raises(dl.DownloadError, match="does not match the SHA-256"):
        dl.download_dataset("ham10000", root, mirror=server.url)


def test_isic2018_layout_with_official_split(server, tmp_path, synth_dir):
    """Task 3's one-hot ground truth per split becomes labels.csv + splits/official.csv."""
    import pandas as pd

    from skinzoo.data.sources import load_dataset
    from skinzoo.data.splits import read_split_file

    images = sorted((synth_dir / "images").glob("*.jpg"))
    meta = pd.read_csv(synth_dir / "HAM10000_metadata.csv").set_index("image_id")
    parts = {"Training": images[:100], "Validation": images[100:120], "Test": images[120:]}
    for folder, chunk in parts.items():
        gt = pd.DataFrame({"image": [p.stem for p in chunk]})
        for c in ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"):
            gt[c] = [float(meta.loc[p.stem, "dx"] == c.lower()) for p in chunk]
        server.files[f"ISIC2018_Task3_{folder}_Input.zip"] = make_zip(
            {f"ISIC2018_Task3_{folder}_Input/{p.name}": p.read_bytes() for p in chunk}
            | {f"ISIC2018_Task3_{folder}_Input/LICENSE.txt": b"CC BY-NC"})
        server.files[f"ISIC2018_Task3_{folder}_GroundTruth.zip"] = make_zip(
            {f"ISIC2018_Task3_{folder}_GroundTruth/ISIC2018_Task3_{folder}_GroundTruth.csv":
             gt.to_csv(index=False).encode()})
    server.files["ISIC2018_Task3_Training_LesionGroupings.csv"] = pd.DataFrame(
        {"image": [p.stem for p in parts["Training"]],
         "lesion_id": [meta.loc[p.stem, "lesion_id"] for p in parts["Training"]]}).to_csv(index=False).encode()
    root = tmp_path / "isic2018"
    result = dl.download_dataset("isic2018", root, mirror=server.url)
    assert result.train_command == f"skinzoo train --data {root} --split-file {root / 'splits' / 'official.csv'}"
    ds = load_dataset(root)
    assert len(ds.table) == 140 and set(ds.table["label"]) <= {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    truth = meta.loc[ds.table["image_id"], "dx"].to_numpy()
    assert (ds.table["label"].to_numpy() == truth).all()
    split = read_split_file(root / "splits" / "official.csv", ds.table)
    assert split.value_counts().to_dict() == {"train": 100, "test": 20, "val": 20}


def test_cli_list_and_offline(tmp_path):
    from skinzoo_cli.main import cli

    listing = CliRunner().invoke(cli, ["data", "download", "--list"])
    assert listing.exit_code == 0
    for name in ("ham10000", "isic2019", "isic2018", "CC BY-NC", "doi:10.1038/sdata.2018.161",
                 "https://isic-challenge-data.s3.amazonaws.com/2019/ISIC_2019_Training_Input.zip",
                 "https://dataverse.harvard.edu/api/access/datafile/3172585"):
        assert name in listing.output
    offline = CliRunner().invoke(cli, ["data", "download", "isic2019", "--to", str(tmp_path / "i"),
                                       "--mirror", f"http://127.0.0.1:{closed_port()}"])
    assert offline.exit_code == 7
    assert offline.output.startswith("error: cannot reach 127.0.0.1:")
    assert "Traceback" not in offline.output
