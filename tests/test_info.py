"""`skinzoo info`: the environment report, its parsers, and the ImageNet reachability check
(against 127.0.0.1 only: a HEAD request that succeeds, an address that refuses at once)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from click.testing import CliRunner

from skinzoo import info as si

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16
"""


def test_cpu_flags_parsed():
    cpu = si.cpu_info(CPUINFO)
    assert cpu["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu["avx512"] is True and cpu["bfloat16"] is True and cpu["amx"] is True
    old = si.cpu_info("model name : Old CPU\nflags : sse avx2\n")
    assert old["avx512"] is False and old["bfloat16"] is False and old["amx"] is False


def test_memory_parsed():
    mem = si.memory_info("MemTotal:       16384000 kB\nMemAvailable:    8192000 kB\n")
    assert mem["total_gb"] == 15.6 and mem["available_gb"] == 7.8


def test_download_check_yes_with_head_only():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_HEAD(self):
            seen.append(self.command)
            self.send_response(200)
            self.send_header("Content-Length", "94765736")
            self.end_headers()

        do_GET = do_HEAD  # would be recorded as GET: the check must never fetch a body

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        result = si.can_download(f"http://127.0.0.1:{httpd.server_address[1]}/w_notop.h5")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result["ok"] is True and result["reason"].startswith("HTTP 200")
    assert seen == ["HEAD"]


def test_download_check_no_when_refused_and_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = si.can_download(f"http://127.0.0.1:{port}/w.h5", timeout=1.5)
    assert time.monotonic() - started < 2
    assert result["ok"] is False and "refused" in result["reason"].lower()


def test_report_lines_and_cli_json(tmp_path):
    from skinzoo_cli.main import cli

    report = si.collect_info(tmp_path / "runs", network=False)
    lines = si.info_lines(report)
    text = "\n".join(lines)
    for part in ("skinzoo ", "TensorFlow 2.", "Keras 3.", "logical cores", "AVX-512", "memory:",
                 f"runs: {tmp_path / 'runs'} (not created yet)", "ImageNet weights downloadable "
                 "from here: not checked"):
        assert part in text
    assert "GPU" in text  # a GPU line, or "none visible"
    result = CliRunner().invoke(cli, ["info", "--json", "--no-network", "--runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["versions"]["tensorflow"].startswith("2.") and data["imagenet_download"]["ok"] is None
    assert not any(tmp_path.iterdir())  # info writes nothing
