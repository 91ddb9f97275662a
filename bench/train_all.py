"""Train the shipped adapters: one `adapters.train` process per task, all at once on one machine.

    python -m bench.train_all --minutes 6 --device cuda --batch-size 256 --out runs/shipped
    python -m bench.train_all --tasks toxicity sentiment --steps 3 --device cpu --batch-size 8   # a smoke run

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

from tasks import TASKS


def launch(task: str, args, out: Path) -> subprocess.Popen:
    run_dir = out / task
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "adapters.train", "--task", task, "--out", str(run_dir), "--device", args.device,
               "--batch-size", str(args.batch_size), "--group-size", str(args.group_size),
               "--micro-batch-size", str(args.micro_batch_size), "--lr", str(args.lr), "--kl-coef", str(args.kl_coef),
               "--algo", args.algo, "--eval-every", str(args.eval_every), "--eval-prompts", str(args.eval_prompts),
               "--checkpoint-every", str(args.checkpoint_every), "--seed", str(args.seed)]
    command += ["--steps", str(args.steps)] if args.steps else ["--minutes", str(args.minutes)]
    if args.resume:
        command.append("--resume")
    if args.init_from:
        command += ["--init-adapter", str(Path(args.init_from) / task)]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--out", default="runs/shipped")
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--steps", type=int, default=0, help="a step budget instead of --minutes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--algo", default="pg")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--micro-batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--eval-prompts", type=int, default=32)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--init-from", default="", help="continue from saved adapters: <dir>/<task> for each task")
    args = parser.parse_args()
    out = Path(args.out)
    started = time.time()
    processes = {task: launch(task, args, out) for task in args.tasks}
    for task, process in processes.items():
        process.wait()
        print(f"{task}: exit {process.returncode} after {time.time() - started:.0f} s", flush=True)
    print(summary(out, args.tasks))


if __name__ == "__main__":
    main()
