"""Real and fake OpenAI-compatible servers for the API-base tests, on 127.0.0.1 only.

llama-cpp-python's server is installed into its own virtual environment in the project cache,
so its web stack (FastAPI, pydantic-settings, ...) never touches the project's pinned packages:

    <cache>/llama-server/<version>-<python>-<cpu>/wheels/   the wheel built from source, once (minutes)
    <cache>/llama-server/<version>-<python>-<cpu>/venv/     the server's environment (seconds, from the wheel)

The key holds the CPU's instruction-set flags because llama.cpp compiles for the CPU it is built on.
Run `python tests/servers.py` to install it ahead of the tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.server
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.models import cache_dir  # noqa: E402

LLAMA_CPP_PYTHON = "0.3.36"
# The server and its dependencies, pinned to the versions tested with (pip freeze of the server's venv).
SERVER_REQUIREMENTS = [
    f"llama-cpp-python[server]=={LLAMA_CPP_PYTHON}",
    "fastapi==0.165.0", "starlette==1.10.0", "uvicorn==0.54.0", "pydantic==2.14.3", "pydantic-settings==2.16.3",
    "pydantic_core==2.50.4", "sse-starlette==3.7.0", "starlette-context==0.3.6", "PyYAML==6.0.3", "numpy==2.4.6",
    "diskcache==5.6.3", "Jinja2==3.1.6", "typing_extensions==4.16.0", "anyio==4.16.0", "h11==0.16.0", "click==8.5.1",
]
# A small build: no multimodal (llava/mtmd) library, which the text server never loads. Not tuned to the build
# machine's CPU (GGML_NATIVE=OFF, AVX2 kernels): a native build on a Xeon with AMX compiled ggml's AMX kernels, and
# the first completion then died of a general protection fault at `ldtilecfg` where the kernel does not grant AMX.
CMAKE_ARGS = ("-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "
              "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON")
MODEL_ALIAS = "smollm2-135m"
READY_TIMEOUT = 120.0


def _cpu_key() -> str:
    flags = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    return hashlib.sha256(f"{platform.machine()} {flags} {CMAKE_ARGS}".encode()).hexdigest()[:10]


def server_home() -> Path:
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache_dir() / "llama-server" / f"{LLAMA_CPP_PYTHON}-{python}-{_cpu_key()}"


def _run(cmd: list[str], env: dict | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({done.returncode}):\n{done.stdout[-4000:]}")


def install_llama_server() -> Path:
    """The Python of an environment with llama-cpp-python[server]; builds and installs it on first use."""
    home = server_home()
    python = home / "venv" / "bin" / "python"
    if (home / "ready").is_file():
        return python
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second test run waits for the first one's build
        if (home / "ready").is_file():
            return python
        wheels = home / "wheels"
        if not list(wheels.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON}-*.whl")):
            start = time.time()
            env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
            # --no-cache-dir: pip's wheel cache is keyed by the source alone and would hand back a build made with
            # other CMAKE_ARGS
            _run([sys.executable, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "--no-binary", "llama-cpp-python",
                  f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-w", str(wheels)], env)
            print(f"built llama-cpp-python {LLAMA_CPP_PYTHON} in {time.time() - start:.0f} s", flush=True)
        if not python.is_file():
            _run([sys.executable, "-m", "venv", str(home / "venv")])
        _run([str(python), "-m", "pip", "install", "-q", "--find-links", str(wheels), *SERVER_REQUIREMENTS])
        (home / "ready").write_text(LLAMA_CPP_PYTHON)
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` on 127.0.0.1 with a GGUF model; start() waits until it answers."""

    def __init__(self, model_path: Path, log_path: Path, n_ctx: int = 2048):
        self.model_path, self.log_path, self.n_ctx = model_path, log_path, n_ctx
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen | None = None

    def start(self) -> "LlamaServer":
        python = install_llama_server()
        cmd = [str(python), "-m", "llama_cpp.server", "--model", str(self.model_path), "--model_alias", MODEL_ALIAS,
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
               "--logits_all", "true", "--n_threads", str(os.cpu_count() or 2)]
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + READY_TIMEOUT
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/models", timeout=2).ok:
                    return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {READY_TIMEOUT:g} s:\n{self.log_path.read_text()[-3000:]}")

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
    print(f"llama-cpp-python server ready: {install_llama_server()} ({time.time() - start:.0f} s)")
