"""Real and fake OpenAI-compatible servers for the API-base tests, on 127.0.0.1 only.

The real one is llama.cpp's own server (`llama-server`: OpenAI-style /v1/completions with top log-probabilities,
token-id prompts, /tokenize), from xllamacpp's prebuilt wheel, installed once into the project cache:

    <cache>/llama-server/xllamacpp-<version>/   pip install --target (a 33 MB wheel: seconds, no compiler)

The wheel is built without CPU-specific kernels (AVX2 at most: no AMX, whose kernels faulted at `ldtilecfg` in a
native build on a Xeon whose kernel does not grant AMX). It needs nothing but itself: tests/llama_server.py runs it
with this Python. Run `python tests/servers.py` to install it ahead of the tests.

Until 2026-12 the tests built llama-cpp-python's server from source instead (12-14 minutes on 2 cores).
"""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ipa.models import cache_dir  # noqa: E402
from tests.helpers import free_port  # noqa: E402

XLLAMACPP = "2026.10.11549"
MODEL_ALIAS = "smollm2-135m"
READY_TIMEOUT = 120.0


def server_home() -> Path:
    return cache_dir() / "llama-server" / f"xllamacpp-{XLLAMACPP}"


def install_llama_server() -> Path:
    """The folder holding the xllamacpp package (for PYTHONPATH); installs it from PyPI on first use."""
    home = server_home()
    if (home / "ready").is_file():
        return home / "lib"
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second test run waits for the first one's install
        if not (home / "ready").is_file():
            cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target", str(home / "lib"),
                   f"xllamacpp=={XLLAMACPP}"]
            print("+", " ".join(cmd), flush=True)
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"installing xllamacpp failed ({done.returncode}):\n{done.stdout[-4000:]}")
            (home / "ready").write_text(XLLAMACPP)
    return home / "lib"


class LlamaServer:
    """llama.cpp's server on 127.0.0.1 with a GGUF model (tests/llama_server.py); start() waits until it answers."""

    def __init__(self, model_path: Path, log_path: Path, n_ctx: int = 8192, n_parallel: int = 4):
        self.model_path, self.log_path, self.n_ctx, self.n_parallel = model_path, log_path, n_ctx, n_parallel
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen | None = None

    def start(self) -> "LlamaServer":
        lib = install_llama_server()
        cmd = [sys.executable, str(ROOT / "tests" / "llama_server.py"), str(self.model_path), str(self.port), MODEL_ALIAS,
               str(self.n_ctx), str(self.n_parallel), str(os.cpu_count() or 2)]
        # PASSIVE: idle OpenMP workers sleep instead of spinning on the cores the tests need between requests.
        env = {**os.environ, "PYTHONPATH": str(lib), "OMP_WAIT_POLICY": "PASSIVE"}
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + READY_TIMEOUT
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.process.returncode}:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/models", timeout=2).ok:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama-server did not answer within {READY_TIMEOUT:g} s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


class FakeCompletionsServer:
    """A tiny OpenAI-style server on 127.0.0.1 whose answers a test chooses.

    tokenize(text) -> ids answers /tokenize (so the start-up probe passes); `completion(payload)`
    returns (status, body) for /v1/completions. `requests` counts what arrived.
    """

    def __init__(self, tokenize, completion):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append((self.path, payload))
                if self.path.endswith("/tokenize"):
                    status, body = 200, {"tokens": tokenize(payload.get("prompt") or payload.get("content") or "")}
                elif self.path.endswith("/completions"):
                    status, body = completion(payload)
                else:
                    status, body = 404, {"error": "not found"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.requests: list[tuple[str, dict]] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeCompletionsServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def silent_port():
    """A port that accepts connections (the kernel's backlog) but never answers: requests to it time out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


if __name__ == "__main__":
    start = time.time()
    print(f"llama-server (xllamacpp {XLLAMACPP}) ready: {install_llama_server()} ({time.time() - start:.0f} s)")
