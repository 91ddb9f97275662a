"""A remote base's cost: drafting and verifying (ipa/decoding/drafting.py) against one request per token, same run.

    python -m bench.api_base --server vllm --json                    # starts vLLM (tests/servers.py) on the embedded model
    python -m bench.api_base --server vllm --latency-ms 100 --json   # every request 100 ms later, as over a network
    python -m bench.api_base --server llamacpp --json                # llama.cpp scores no prompt: one request a token
    python -m bench.api_base --url http://HOST:8000/v1 --model NAME  # a server already running

The same prompts are decoded twice on the same server through the same latency: once with --draft-tokens k, once one
request per token (k = 0), side by side (base and tailored columns) with the shipped toxicity adapter, sampled as the
playground samples (the toxicity task's settings, a fixed seed). One JSON object: server, latency_ms,
requests_per_token, tokens_per_s, per_token_requests_per_token, per_token_tokens_per_s, acceptance_rate and what
the run was. `--latency-ms N` puts a proxy on 127.0.0.1 in front of the server that holds every request N ms
before passing it on: the round trip of a server across a network, which drafting saves.

The acceptance rate is an upper bound for a real deployment when the server serves the model that the playground
drafts with (here: the embedded model on both sides, vLLM's float copy and the local one); a larger base than the
stand-in accepts fewer drafts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.server
import json
import sys
import threading
import time
from pathlib import Path

import requests
import torch

from ipa.decoding.engine import generate
from ipa.decoding.remote import ApiBase, ApiBaseConfig
from ipa.decoding.run import DecodeConfig, TailoredPolicy
from ipa.loading import load_host
from ipa.models import machine_name
from ipa.tasks import TASKS

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "The old lighthouse keeper climbed the stairs and",
    "In the middle of the night, the phone rang and",
    "Our school's science fair this year was about",
    "When the train finally arrived at the station,",
]
TARGETS = {"requests_per_token": 0.35, "speed_up_at_100_ms": 2.0, "speed_up_on_localhost": 1.0}
"""Issue 27's targets (CPU, the embedded model served by vLLM)."""


class LatencyProxy:
    """A forwarding proxy on 127.0.0.1 that holds every request `latency_ms` before passing it to `target`."""

    def __init__(self, target: str, latency_ms: float):
        root = target[: -len("/v1")] if target.endswith("/v1") else target
        session = requests.Session()
        delay = latency_ms / 1000

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self, method):
                time.sleep(delay)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                response = session.request(method, root + self.path, data=body or None, timeout=300,
                                           headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
                self.send_response(response.status_code)
                self.send_header("Content-Type", response.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            def do_POST(self):  # noqa: N802 - the http.server API
                self._forward("POST")

            def do_GET(self):  # noqa: N802
                self._forward("GET")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def started(server: str, log_dir: Path):
    """The named server on the embedded model (tests/servers.py installs and starts it), stopped afterwards."""
    sys.path.insert(0, str(ROOT))
    from tests.servers import LlamaServer, VllmServer

    from ipa.models import embedded_gguf_path

    log_dir.mkdir(parents=True, exist_ok=True)
    if server == "vllm":
        running = VllmServer(log_dir / "vllm.log").start()
    else:
        running = LlamaServer(embedded_gguf_path(), log_dir / "llama-server.log").start()
    try:
        yield running.url
    finally:
        running.stop()


def decode(host, url: str, model: str, draft_tokens: int, config: DecodeConfig, top_logprobs: int) -> dict:
    api = ApiBase.for_host(ApiBaseConfig(url=url, model=model, draft_tokens=draft_tokens, top_logprobs=top_logprobs), host)
    policy = TailoredPolicy(host, host, "toxicity", remote_base=api)
    start = time.perf_counter()
    result = generate(policy, PROMPTS, config)
    seconds = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for c in result.base + result.tailored)
    stats = api.stats.as_dict()
    api.close()
    return {"seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 2),
            "scoring": api.scoring, **stats}


def run(url: str, model: str, server: str, latency_ms: float, draft_tokens: int, max_new_tokens: int,
        top_logprobs: int) -> dict:
    torch.set_num_threads(1)  # the server needs the other core
    host = load_host("embedded", torch.device("cpu"), torch.float32)
    host.load_adapter("toxicity", ROOT / "adapters" / "trained" / "toxicity")
    config = DecodeConfig.for_task(TASKS["toxicity"], max_new_tokens=max_new_tokens, seed=0)
    proxy = LatencyProxy(url, latency_ms) if latency_ms else None
    target = proxy.url if proxy else url
    try:
        decode(host, target, model, draft_tokens, DecodeConfig(max_new_tokens=4, seed=0), top_logprobs)  # warm-up
        drafted = decode(host, target, model, draft_tokens, config, top_logprobs)
        per_token = decode(host, target, model, 0, config, top_logprobs)
    finally:
        if proxy:
            proxy.close()
    return {
        "server": server, "latency_ms": latency_ms,
        "requests_per_token": drafted["requests_per_token"], "tokens_per_s": drafted["tokens_per_s"],
        "per_token_requests_per_token": per_token["requests_per_token"],
        "per_token_tokens_per_s": per_token["tokens_per_s"],
        "speed_up": round(drafted["tokens_per_s"] / per_token["tokens_per_s"], 2),
        "acceptance_rate": drafted["acceptance_rate"],
        "acceptance_is_upper_bound": True,
        "draft_tokens": draft_tokens if drafted["scoring"] else 0, "scoring": drafted["scoring"],
        "top_logprobs": top_logprobs, "prompts": len(PROMPTS), "columns": 2, "max_new_tokens": max_new_tokens,
        "sampling": {"temperature": config.temperature, "top_p": config.top_p, "seed": config.seed},
        "drafted": drafted, "per_token": per_token,
        "machine": machine_name(torch.device("cpu")), "date": datetime.date.today().isoformat(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api_base", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("vllm", "llamacpp"), default="vllm",
                        help="the server to start on the embedded model (default: vllm); ignored with --url")
    parser.add_argument("--url", default="", help="a server already running (its OpenAI-style base URL)")
    parser.add_argument("--model", default="smollm2-135m", help="the served model's name (with --url)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every request (default 0)")
    parser.add_argument("--draft-tokens", type=int, default=4, help="tokens drafted per request (default 4)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--top-logprobs", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print the JSON object only")
    args = parser.parse_args(argv)
    if args.latency_ms < 0:
        parser.error("--latency-ms must be 0 or more")
    with (contextlib.nullcontext(args.url) if args.url else started(args.server, ROOT / "runs" / "bench-api-base")) as url:
        result = run(url, args.model if args.url else "smollm2-135m", "url" if args.url else args.server,
                     args.latency_ms, args.draft_tokens, args.max_new_tokens, args.top_logprobs)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['server']}, +{args.latency_ms:g} ms a request: drafted {result['tokens_per_s']} tokens/s at "
          f"{result['requests_per_token']} requests/token (acceptance {result['acceptance_rate']:.0%}, an upper bound), "
          f"one request per token {result['per_token_tokens_per_s']} tokens/s at {result['per_token_requests_per_token']}"
          f" requests/token: x{result['speed_up']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
