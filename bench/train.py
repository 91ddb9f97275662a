"""Training throughput: samples per second, split into sampling, scoring and the update.

    python -m bench.train                                   # CPU: toxicity, batch 16, 4 steps
    python -m bench.train --device cuda --batch-size 256 --steps 6

Takes every ipa.training.loop flag (derived from TrainConfig); BENCH_DEFAULTS sets those of a timing run.

Runs the real training loop (ipa.training.loop) for a few steps and reports the median step's split,
skipping the first step (warm-up). Writes a section of BENCHMARKS.md unless --out ''.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path


from ipa.training.loop import build_parser, config_from_args, train
from ipa.models import machine_name
from bench.decode import write_section


def summarize(metrics: list[dict]) -> dict:
    steps = metrics[1:] if len(metrics) > 1 else metrics
    med = {key: statistics.median(m[key] for m in steps) for key in ("sample_s", "score_s", "update_s", "samples_per_s")}
    total = med["sample_s"] + med["score_s"] + med["update_s"]
    return {**{k: round(v, 3) for k, v in med.items()},
            "sample_share": round(med["sample_s"] / total, 2), "steps_timed": len(steps)}


BENCH_DEFAULTS = {"device": "cpu", "steps": 4, "eval_prompts": 2, "eval_samples": 1, "eval_every": 0,
                  "checkpoint_every": 1000, "checkpoint_minutes": 0, "samples_every": 0}
"""ipa.training.loop settings of a timing run (every other flag is ipa.training.loop's own, with its default)."""


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()  # ipa.training.loop's flags, derived from TrainConfig
    parser.prog, parser.description = "python -m bench.train", __doc__.split("\n\n")[0]
    parser.set_defaults(**BENCH_DEFAULTS)
    parser.add_argument("--write", default="BENCHMARKS.md", help="the file whose section this run rewrites ('' for none)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as run_dir:
        args.out = run_dir
        config = config_from_args(args)
        train(config, progress=False)
        metrics = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    result = summarize(metrics)
    device = config.model.resolve()[0]
    algo = config.algo
    line = (f"| {machine_name(device)} | {config.run.task} / {algo.algo} | {algo.batch_size} × {config.decode.max_new_tokens} tokens | "
            f"{result['samples_per_s']} | {result['sample_s']} | {result['score_s']} | {result['update_s']} | "
            f"{int(100 * result['sample_share'])} % | {time.strftime('%Y-%m-%d')} |")
    print(json.dumps(result))
    print(line)
    if args.write:
        heading = f"Training throughput ({device.type.upper()})"
        body = (f"Command: `python -m bench.train --device {config.model.device} --dtype {config.model.dtype} "
                f"--batch-size {algo.batch_size} --steps {config.run.steps}` (median step after the first).\n\n"
                "| machine | task / algorithm | batch | samples/s | sampling s | scoring s | update s | sampling share | date |\n"
                "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n" + line)
        write_section(Path(args.write), heading, body)


if __name__ == "__main__":
    main()
