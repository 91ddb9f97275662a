"""Training throughput: samples per second, split into sampling, scoring and the update.

    python -m bench.train                                   # CPU: toxicity, batch 16, 4 steps
    python -m bench.train --device cuda --batch-size 256 --steps 6

Runs the real training loop (adapters.train) for a few steps and reports the median step's split,
skipping the first step (warm-up). Writes a section of BENCHMARKS.md unless --out ''.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from adapters.train import train
from adapters.training import TrainConfig
from bench.decode import machine, write_section


def summarize(metrics: list[dict]) -> dict:
    steps = metrics[1:] if len(metrics) > 1 else metrics
    med = {key: statistics.median(m[key] for m in steps) for key in ("sample_s", "score_s", "update_s", "samples_per_s")}
    total = med["sample_s"] + med["score_s"] + med["update_s"]
    return {**{k: round(v, 3) for k, v in med.items()},
            "sample_share": round(med["sample_s"] / total, 2), "steps_timed": len(steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="toxicity")
    parser.add_argument("--algo", default="pg")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 where the hardware runs it fast), float32 or bfloat16")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--micro-batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", default="BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as run_dir:
        config = TrainConfig.from_fields(task=args.task, algo=args.algo, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                             micro_batch_size=args.micro_batch_size, steps=args.steps, out=run_dir, eval_prompts=2,
                             eval_samples=1, eval_every=0, checkpoint_every=1000, samples_every=0)
        train(config, progress=False)
        metrics = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    result = summarize(metrics)
    device = torch.device("cuda" if args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    line = (f"| {machine(device)} | {args.task} / {args.algo} | {args.batch_size} × {config.decode.max_new_tokens} tokens | "
            f"{result['samples_per_s']} | {result['sample_s']} | {result['score_s']} | {result['update_s']} | "
            f"{int(100 * result['sample_share'])} % | {time.strftime('%Y-%m-%d')} |")
    print(json.dumps(result))
    print(line)
    if args.out:
        path = Path(args.out)
        heading = f"Training throughput ({device.type.upper()})"
        body = (f"Command: `python -m bench.train --device {args.device} --dtype {args.dtype} --batch-size {args.batch_size} "
                f"--steps {args.steps}` "
                "(median step after the first).\n\n"
                "| machine | task / algorithm | batch | samples/s | sampling s | scoring s | update s | sampling share | date |\n"
                "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n" + line)
        write_section(path, heading, body)


if __name__ == "__main__":
    main()
