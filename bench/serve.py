"""Serving: the app started as a user starts it, then many gradio_client users at once on the sentiment task.

    python -m bench.serve                                    # writes the "Serving (bench.serve)" section of BENCHMARKS.md
    python -m bench.serve --app-args "--device cuda" --concurrency 4,16,32,50 --json serve.json
    python -m bench.serve --concurrency 2 --tokens 4 --repeats 1 --out ''   # a quick smoke run

Measures (1) start-up: seconds from spawning `python app.py --port PORT` until the page answers HTTP 200;
(2) the latency of one side-by-side request alone (`/generate_sentiment`, adapter "sentiment", n=1, exactly
the page's API), median of --repeats after a warm-up; (3) for each N in --concurrency, N clients at once, each
its own `gradio_client.Client` with default settings in its own thread, released together by a barrier:
successes, wall time, p50/p95 latency, aggregate speed-up (successes x single latency / wall time: N x single /
wall when all succeed) and row-tokens/s (successes x 2 columns x --tokens / wall time). Targets: 16 at once all
succeed with speed-up >= 6 and p95 <= 3.5 x single; 50 at once all succeed; start-up <= 10 s.

On a shared 2-core machine one round of 16 varies by 10-15 % between runs of the same command: --rounds N runs each
N times and reports the round of median wall time, with the range of the speed-ups beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.decode import write_section

REPO_ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The weather this morning was"
HEADING = "Serving (bench.serve)"


class StartupError(RuntimeError):
    """The app exited, or did not answer, before serving."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, app_args: list[str], log) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    return subprocess.Popen([sys.executable, "app.py", "--port", str(port), *app_args], cwd=REPO_ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_up(proc: subprocess.Popen, url: str, started: float, log_path: str, limit: float = 300.0) -> float:
    """Seconds from `started` until `url` answers HTTP 200; a clear error if the app exits or takes over `limit`."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        if proc.poll() is not None:
            raise StartupError(f"the app exited with code {proc.returncode} before serving; its log:\n{tail(log_path)}")
        if time.perf_counter() - started > limit:
            raise StartupError(f"the app did not answer HTTP 200 at {url} within {limit:.0f} s; its log:\n{tail(log_path)}")
        time.sleep(0.2)


def stop_app(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(path: str, lines: int = 40) -> str:
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def request(client, tokens: int, seed: int):
    return client.predict(text=PROMPT, adapter="sentiment", alpha=1.0, n=1, max_new_tokens=tokens, temperature=1.0,
                          top_p=0.9, seed=seed, api_name="/generate_sentiment")


def single_latency(url: str, tokens: int, repeats: int) -> float:
    from gradio_client import Client

    client = Client(url, verbose=False)
    request(client, tokens, 0)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        request(client, tokens, 0)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def concurrent_round(url: str, n: int, tokens: int, limit: float) -> tuple[float, list[dict]]:
    """N clients released together; (wall seconds, one {ok, latency, error} per client). Unfinished ones fail."""
    from gradio_client import Client

    results: list[dict] = [{"ok": False, "latency": None, "error": f"unfinished after {limit:.0f} s"} for _ in range(n)]
    released: list[float] = []
    barrier = threading.Barrier(n, action=lambda: released.append(time.perf_counter()))

    def user(i: int) -> None:
        try:
            client = Client(url, verbose=False)
        except Exception as err:  # noqa: BLE001
            client, results[i] = None, {"ok": False, "latency": None, "error": f"Client(): {type(err).__name__}: {err}"}
        barrier.wait()
        if client is None:
            return
        try:
            request(client, tokens, i)
            results[i] = {"ok": True, "latency": time.perf_counter() - released[0], "error": None}
        except Exception as err:  # noqa: BLE001
            results[i] = {"ok": False, "latency": time.perf_counter() - released[0], "error": f"{type(err).__name__}: {err}"}

    deadline = time.perf_counter() + limit
    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))
    results = list(results)  # a snapshot: threads still running past the limit must not change it
    if not released:  # the barrier never opened: every client is still being built
        return limit, results
    finished = [r["latency"] for r in results if r["latency"] is not None]
    unfinished = any(t.is_alive() for t in threads)
    return (deadline - released[0] if unfinished or not finished else max(finished)), results


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else None


def summarize(n: int, wall: float, results: list[dict], single: float, tokens: int) -> dict:
    ok = [r["latency"] for r in results if r["ok"]]
    p50, p95 = percentile(ok, 0.5), percentile(ok, 0.95)
    errors = sorted({r["error"] for r in results if not r["ok"]})
    return {"n": n, "successes": len(ok), "wall_s": round(wall, 2), "p50_s": p50 and round(p50, 2),
            "p95_s": p95 and round(p95, 2), "speedup": round(len(ok) * single / wall, 2),  # = N x single / wall when all succeed
            "p95_over_single": p95 and round(p95 / single, 2), "row_tokens_per_s": round(len(ok) * 2 * tokens / wall, 1),
            "errors": errors[:5]}


def median_round(tries: list[dict]) -> dict:
    """The round of median wall time among tries of one N (the lower middle one of an even count), with every try's
    speed-up beside it."""
    middle = sorted(tries, key=lambda r: r["wall_s"])[(len(tries) - 1) // 2]
    return {**middle, "speedups": [r["speedup"] for r in tries]} if len(tries) > 1 else middle


def verdicts(result: dict) -> list[str]:
    """The issue's targets, each 'met', 'MISSED' or 'not measured'."""
    rows, mark = {r["n"]: r for r in result["rounds"]}, lambda ok: "met" if ok else "MISSED"
    lines = [f"start-up {result['startup_s']:.1f} s (target <= 10 s): {mark(result['startup_s'] <= 10)}"]
    if r := rows.get(16):
        ok = r["successes"] == 16 and r["speedup"] >= 6 and (r["p95_over_single"] or math.inf) <= 3.5
        lines.append(f"16 at once {r['successes']}/16, speed-up {r['speedup']}, p95 {r['p95_over_single']} x single "
                     f"(target 16/16, >= 6, <= 3.5): {mark(ok)}")
    else:
        lines.append("16 at once: not measured")
    r = rows.get(50)
    lines.append(f"50 at once {r['successes']}/50 (target 50/50): {mark(r['successes'] == 50)}" if r else "50 at once: not measured")
    return lines


def table(result: dict) -> str:
    lines = [f"Machine: {result['machine']}; {result['date']}; app flags `{result['app_args'] or '(none)'}`; sentiment task, "
             f"adapter on, {result['tokens']} new tokens per column. Start-up {result['startup_s']:.1f} s; one request "
             f"alone {result['single_s']:.2f} s (median of {result['repeats']}).", "",
             "| at once | succeeded | wall s | p50 s | p95 s | speed-up | p95 / single | row-tokens/s |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rounds"]:
        cells = [f"{r['successes']}/{r['n']}", *(r[k] for k in ("wall_s", "p50_s", "p95_s", "speedup", "p95_over_single", "row_tokens_per_s"))]
        lines.append(f"| {r['n']} | " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    tried = [f"{r['n']} at once {min(r['speedups'])}-{max(r['speedups'])} x" for r in result["rounds"] if "speedups" in r]
    if tried:
        lines += ["", f"Each row is the round of median wall time of {result['rounds_each']}; the speed-ups of all of them: "
                  + ", ".join(tried) + "."]
    return "\n".join(lines + ["", "Targets: " + "; ".join(verdicts(result)) + "."])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app-args", default="", help='flags for app.py, one string (e.g. "--device cuda")')
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--concurrency", default="4,16,32,50", help="comma-separated numbers of clients at once")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of each N (the median one is reported)")
    parser.add_argument("--round-timeout", type=float, default=900.0, help="wall-clock limit of one round, seconds")
    parser.add_argument("--out", default="BENCHMARKS.md", help="file to update ('' to only print)")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be 1 or more, got {args.rounds}")
    from ipa.models import machine_name, resolve_device
    from app.config import parse_args as app_config

    app_args = shlex.split(args.app_args)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    result = {"command": shlex.join(["python", "-m", "bench.serve", *(sys.argv[1:] if argv is None else argv)]),
              "machine": machine_name(resolve_device(app_config(app_args).models.device)), "date": time.strftime("%Y-%m-%d"),
              "app_args": args.app_args, "tokens": args.tokens, "repeats": args.repeats, "rounds_each": args.rounds,
              "rounds": []}
    with tempfile.NamedTemporaryFile("w", prefix="bench-serve-", suffix=".log", delete=False) as log:
        started = time.perf_counter()
        proc = start_app(port, app_args, log)
    try:
        result["startup_s"] = round(wait_until_up(proc, url, started, log.name), 2)
        print(f"start-up: {result['startup_s']:.1f} s (app log: {log.name})", flush=True)
        result["single_s"] = round(single_latency(url, args.tokens, args.repeats), 3)
        print(f"one request alone: {result['single_s']:.2f} s", flush=True)
        for n in (int(c) for c in args.concurrency.split(",")):
            tries = []
            for _ in range(args.rounds):
                wall, results = concurrent_round(url, n, args.tokens, args.round_timeout)
                tries.append(summarize(n, wall, results, result["single_s"], args.tokens))
                print(json.dumps(tries[-1]), flush=True)
            result["rounds"].append(median_round(tries))
    except StartupError as err:
        sys.exit(f"error: {err}")
    finally:
        stop_app(proc)
    print("\n" + table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.out:
        write_section(Path(args.out), HEADING, f"Command: `{result['command']}`\n\n" + table(result))


if __name__ == "__main__":
    main()
