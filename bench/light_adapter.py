"""A light adapter against the full-size one (issue 26): speed, and what the same training budget buys.

    python -m bench.light_adapter --task sentiment --json
    python -m bench.light_adapter --objective objectives/cheerful-ocean.json --json
    python -m bench.light_adapter --minutes 0 --json           # speed only

The light adapter is LoRA on the base's first 4 layers with its final norm and output layer (`--adapter-init light`,
ipa.models.light_model_dir); the full-size one LoRA on the base itself. Prints one JSON object:

    light_params, base_params      parameters of the light model and of the base
    decode                         side-by-side tokens/s (prompts × new tokens / s, both columns) at batch 1 and 16 for
                                   each: light (its rows inside the base's forward pass, ipa.decoding.fused), full, and
                                   light_two_pass (the light model's rows in a second forward pass after the base's:
                                   what the fusion saves); decode_speedup: light / full at batch 1 (and _16)
    train                          training samples/s for each (rl_step, a batch of 16 × the task's tokens);
                                   train_speedup: light / full
    quality                        after the same training budget (--minutes of this machine's cores each: CPU time,
                                   the two runs' steps taken in turn), on held-back prompts: base, tailored_light,
                                   tailored_full, and light_alone (the small
                                   tuned model decoded without the base; its perplexity and KL measured against the
                                   base): mean reward, the task's metrics, perplexity, relevance

Speed figures are medians of --repeats timed runs taken in turn (light, full, light, ...), so that their ratios hold on
a machine whose speed changes from minute to minute. The training budget is counted in CPU time (the process's, over
its steps), M minutes being M × 60 s × torch's threads: on the idle 2-core machine what M minutes of wall time give,
and the same work when the other engineers' jobs take half the machine (wall time would then give half the steps). Every adapter in the speed part has random LoRA weights (B ≠ 0:
the work of a trained one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import threading
import time

import torch

from ipa.decoding.engine import Engine, Request, RowBatch, generate
from ipa.decoding.run import DecodeConfig, DecodeRun, TailoredPolicy
from ipa.evaluation.compare import adapter_alone, against_base
from ipa.evaluation.evaluate import column_metrics, decode_all
from ipa.loading import load_host
from ipa.models import LIGHT, light_name, machine_name, parameter_count, resolve_device, resolve_dtype
from ipa.policy_adapter import AdapterCard
from ipa.tasks.metrics import SHARED_METRICS
from ipa.training.config import TrainConfig
from ipa.training.loop import rl_step, setup
from bench.decode import PROMPTS

REPORTED = ("mean_reward", "mean_reward_ci95", "perplexity", "standalone_perplexity", "relevance", "distinct_2",
            "kl_per_token", "mean_tokens")
"""The quality metrics kept for each column, with the task's own (its rates, its reward's parts)."""


def _random_lora(host, name: str, seed: int = 0) -> None:
    host.new_adapter(name, AdapterCard(task="custom"))
    generator = torch.Generator().manual_seed(seed)
    for param_name, param in host.peft.named_parameters():
        if "lora_B" in param_name and f".{name}." in param_name:
            param.data = (torch.randn(param.shape, generator=generator) * 0.01).to(param.device, param.dtype)


def _two_pass(policy: TailoredPolicy, prompts: list[str], config: DecodeConfig) -> None:
    """Side-by-side decoding with the light model's rows in a RowBatch of their own, stepped after the base's: the
    engine as it ran a light adapter before ipa.decoding.fused."""
    engine = Engine.for_policy(policy)
    engine.batches = {"base": RowBatch(policy.base), "adapter": RowBatch(policy.adapter)}
    run = DecodeRun(policy, prompts, config)
    engine.submit(Request(run))
    while not run.done:
        engine.step()


def decode_speed(base, light, tokens: int, repeats: int, batches=(1, 16)) -> dict:
    policies = {"light": TailoredPolicy(base, light, "bench-light"), "full": TailoredPolicy(base, base, "bench-full")}
    config = DecodeConfig(max_new_tokens=tokens, min_new_tokens=tokens, stop_at_eos=False, seed=0)
    out = {}
    for batch in batches:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
        modes = {"light": lambda: generate(policies["light"], prompts, config),
                 "full": lambda: generate(policies["full"], prompts, config),
                 "light_two_pass": lambda: _two_pass(policies["light"], prompts, config)}
        times = {mode: [] for mode in modes}
        for mode, fn in modes.items():
            fn()  # warm-up
        for _ in range(repeats):
            for mode, fn in modes.items():
                start = time.perf_counter()
                fn()
                times[mode].append(time.perf_counter() - start)
        for mode in modes:
            out[f"{mode}_{batch}"] = round(batch * tokens / statistics.median(times[mode]), 2)
        print(json.dumps({k: v for k, v in out.items() if k.endswith(f"_{batch}")}), file=sys.stderr, flush=True)
    return out


def _config(args, init: str, out: str, minutes: float) -> TrainConfig:
    target = {"objective": args.objective} if args.objective else {"task": args.task}
    return TrainConfig.from_fields(**target, adapter_init=init, out=out, minutes=minutes, lr=args.lr,
                                   relevance_weight=args.relevance_weight, batch_size=16, eval_every=0, eval_prompts=8,
                                   eval_samples=1, samples_every=0, checkpoint_every=0, checkpoint_minutes=0,
                                   device=args.device, dtype=args.dtype, seed=args.seed)


def train_speed(args, steps: int) -> dict:
    """Samples/s of each adapter's rl_step, steps taken in turn; the first of each left out (warm-up)."""
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: setup(_config(args, init, f"{tmp}/{name}", 0)) for name, init in (("light", LIGHT), ("full", ""))}
        times = {name: [] for name in runs}
        for _ in range(steps + 1):
            for name, run in runs.items():
                record = rl_step(run, stop)
                times[name].append(record["sample_s"] + record["score_s"] + record["update_s"])
                times[name + "_split"] = times.get(name + "_split", []) + [(record["sample_s"], record["update_s"])]
    out = {}
    for name in runs:
        median = statistics.median(times[name][1:])
        out[f"{name}_samples_per_s"] = round(16 / median, 3)
        splits = times[name + "_split"][1:]
        out[f"{name}_sample_s"] = round(statistics.median(s for s, _ in splits), 3)
        out[f"{name}_update_s"] = round(statistics.median(u for _, u in splits), 3)
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


def quality(args) -> dict:
    """Train both adapters for the same CPU time of steps, in turn, then evaluate on held-back prompts."""
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: setup(_config(args, init, f"{tmp}/{name}", 0)) for name, init in (("light", LIGHT), ("full", ""))}
        budget, used = args.minutes * 60 * torch.get_num_threads(), {name: 0.0 for name in runs}
        while any(spent < budget for spent in used.values()):
            for name, run in runs.items():
                if used[name] < budget:
                    start = time.process_time()
                    rl_step(run, stop)
                    used[name] += time.process_time() - start
                    print(f"{name} step {run.step}: {used[name]:.0f} of {budget:.0f} CPU s", file=sys.stderr, flush=True)
        full, light = runs["full"], runs["light"]
        target = full.config.run.target
        inputs = target.inputs("eval", limit=args.limit)
        prompts = [full.task.build_prompt(x, full.policy.tokenizer) for x in inputs]
        config = DecodeConfig.for_task(full.task, alpha=1.0, seed=0)
        k, log = args.samples_per_prompt, lambda message: print(message, file=sys.stderr, flush=True)
        columns = {"base": decode_all(full.policy, prompts, config, k, 8, ("base",), log)["base"],
                   "tailored_full": decode_all(full.policy, prompts, config, k, 8, ("tailored",), log)["tailored"],
                   "tailored_light": decode_all(light.policy, prompts, config, k, 8, ("tailored",), log)["tailored"]}
        alone = decode_all(adapter_alone(light.policy), prompts, config, k, 8, ("tailored",), log)["tailored"]
        columns["light_alone"] = against_base(light.policy, alone, [p for p in prompts for _ in range(k)])
        scorer = target.scorer(str(full.device))
        report = {"steps": {"light": light.step, "full": full.step},
                  "cpu_seconds": {name: round(spent, 1) for name, spent in used.items()}, "budget_cpu_seconds": budget,
                  "wall_seconds": {"light": round(light.elapsed, 1), "full": round(full.elapsed, 1)},
                  "n_prompts": len(inputs), "samples_per_prompt": k}
        for name, completions in columns.items():
            metrics = column_metrics(target.card_task, scorer, inputs, completions, k)
            report[name] = {key: (round(v, 4) if isinstance(v, float) else v) for key, v in metrics.items()
                            if key in REPORTED or key not in SHARED_METRICS}
        base_reward = report["base"]["mean_reward"]
        for name in ("tailored_light", "tailored_full", "light_alone"):
            report[name]["gain"] = round(report[name]["mean_reward"] - base_reward, 4)
        report["examples"] = [{"input": inputs[i], **{name: columns[name][i * k].text for name in columns}}
                              for i in range(min(3, len(inputs)))]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.light_adapter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--objective", default="", help="an objective's JSON file instead of --task")
    parser.add_argument("--minutes", type=float, default=3.0, help="each adapter's training budget: minutes of this "
                        "machine's cores, counted in CPU time (0: speed only)")
    parser.add_argument("--lr", type=float, default=1e-3, help="the classroom objective's (docs/objectives.md)")
    parser.add_argument("--relevance-weight", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=24, help="held-back prompts")
    parser.add_argument("--samples-per-prompt", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32, help="new tokens in the decoding speed runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps of each (after a warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the one JSON object only at the end")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    base, light = load_host("embedded", device, dtype), load_host(light_name("embedded"), device, dtype)
    light.light_layers(base)
    _random_lora(base, "bench-full")
    _random_lora(light, "bench-light")
    started = time.time()
    report = {"machine": machine_name(device), "dtype": str(dtype).removeprefix("torch."),
              "date": time.strftime("%Y-%m-%d"), "command": "python -m bench.light_adapter " + " ".join(argv),
              "target": args.objective or args.task, "seed": args.seed,
              "light_params": parameter_count(light.base_model), "base_params": parameter_count(base.base_model)}
    report["light_share"] = round(report["light_params"] / report["base_params"], 3)
    report["decode"] = decode_speed(base, light, args.tokens, args.repeats)
    report["decode_speedup"] = round(report["decode"]["light_1"] / report["decode"]["full_1"], 3)
    report["decode_speedup_16"] = round(report["decode"]["light_16"] / report["decode"]["full_16"], 3)
    del base, light
    report["train"] = train_speed(args, args.train_steps)
    report["train_speedup"] = round(report["train"]["light_samples_per_s"] / report["train"]["full_samples_per_s"], 3)
    if args.minutes:
        report["quality"] = quality(args)
    report["seconds"] = round(time.time() - started)
    print(json.dumps(report, indent=2 if args.json else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
