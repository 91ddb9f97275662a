"""Train the shipped adapters: one `ipa.training.loop` process per task, all at once on one machine.

    python -m bench.train_all --device cuda --out runs/shipped
    python -m bench.train_all --tasks toxicity sentiment --steps 3 --device cpu --batch-size 8   # a smoke run

Every flag other than --tasks, --out and --init-from is an `ipa.training.loop` flag, passed to each run as it is
(`python -m ipa.training.loop --help` lists them); SHIPPED holds the settings the shipped adapters were trained
with, which flags given here override.

Small models leave a big GPU idle between kernel launches, so six processes side by side finish about
as fast as one. Each run writes to <out>/<task>/ (log.txt, metrics.jsonl, evals.jsonl, adapter/); the
summary table at the end gives reward before -> after on held-back prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ipa.training.loop import build_parser
from ipa.tasks import TASKS


SHIPPED = ["--minutes", "6", "--batch-size", "256", "--micro-batch-size", "32", "--eval-every", "0",
           "--eval-prompts", "32", "--checkpoint-every", "50"]
"""ipa.training.loop flags of the shipped runs (an H100, docs/design.md); the rest are ipa.training.loop's defaults."""


def launch(task: str, train_args: list[str], out: Path, init_from: str) -> subprocess.Popen:
    run_dir = out / task
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ipa.training.loop", *train_args, "--task", task, "--out", str(run_dir)]
    if init_from:
        command += ["--init-adapter", str(Path(init_from) / task)]
    log = (run_dir / "log.txt").open("a")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1", PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True"))


def summary(out: Path, tasks: list[str]) -> str:
    lines = ["| task | steps | minutes | samples/s | reward before | reward after |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for task in tasks:
        card_path = out / task / "adapter" / "card.json"
        if not card_path.is_file():
            lines.append(f"| {task} | failed: see {out / task / 'log.txt'} | | | | |")
            continue
        card = json.loads(card_path.read_text())
        metrics = [json.loads(x) for x in (out / task / "metrics.jsonl").read_text().splitlines() if x]
        rate = sum(m["samples_per_s"] for m in metrics) / max(1, len(metrics))
        lines.append(f"| {task} | {card['steps']} | {card['train_seconds'] / 60:.1f} | {rate:.1f} | "
                     f"{card['metrics_before']['mean_reward']:.3f} | {card['metrics_after']['mean_reward']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--out", default="runs/shipped")
    parser.add_argument("--init-from", default="", help="continue from saved adapters: <dir>/<task> for each task")
    args, train_args = parser.parse_known_args()
    if "--steps" in train_args:  # a step budget replaces the shipped time budget
        train_args = SHIPPED[2:] + train_args
    else:
        train_args = SHIPPED + train_args
    train_parser = build_parser()
    train_parser.parse_args(train_args)  # a wrong flag fails here, once, not in six processes
    out = Path(args.out)
    started = time.time()
    processes = {task: launch(task, train_args, out, args.init_from) for task in args.tasks}
    for task, process in processes.items():
        process.wait()
        print(f"{task}: exit {process.returncode} after {time.time() - started:.0f} s", flush=True)
    print(summary(out, args.tasks))


if __name__ == "__main__":
    main()
