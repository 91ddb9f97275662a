"""Train a policy adapter with reinforcement learning: the loop and its command line.

    python -m adapters.train --task toxicity --minutes 2
    python -m adapters.train --task commongen --algo quark --steps 200 --batch-size 256 --device cuda
    python -m adapters.train --task toxicity --out runs/tox --resume          # after Ctrl-C or a kill
    accelerate launch --num_processes 2 -m adapters.train --task toxicity ...  # data parallel

One step: sample from the tailored policy, score, update the adapter (adapters.pg or adapters.quark).
Every step goes to <out>/metrics.jsonl; example generations to samples.jsonl; held-back evaluations to
evals.jsonl; checkpoints to <out>/checkpoint (atomically, at intervals, on Ctrl-C / SIGTERM and at the
end); the trained adapter to <out>/adapter, its card holding the metrics before and after.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from adapters.cli import add_dataclass_args, dataclass_from_args, exit_with_user_error
from adapters.loading import load_host
from adapters.models import ModelLoadError, check_same_tokenizer, resolve_device, resolve_dtype
from adapters.pg import pg_step
from adapters.policy_adapter import AdapterCard, AdapterError
from adapters.quark import DataPool, quark_step
from adapters.tailored_decoding import DecodeConfig, DecodeError, TailoredPolicy, generate
from adapters.training import (
    TrainConfig,
    TrainError,
    config_dict,
    find_checkpoint,
    load_checkpoint,
    machine_name,
    save_checkpoint,
    step_rng,
)


@dataclass
class Run:
    """Everything a training run holds."""

    config: TrainConfig
    run_dir: Path
    policy: TailoredPolicy
    task: object
    scorer: Callable
    train_inputs: list[dict]
    eval_inputs: list[dict]
    optimizer: torch.optim.Optimizer
    device: torch.device
    pool: DataPool | None = None
    step: int = 0
    elapsed: float = 0.0
    metrics_before: dict = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1
    accelerator: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# --- set-up ----------------------------------------------------------------------------------------------


def default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.task}-{config.algo}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test{os.getpid()}"  # one per process: data-parallel ranks probe at once
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise TrainError(f"Cannot write to the output directory {run_dir}: {err.strerror or err}.") from None


def build_policy(config: TrainConfig, device: torch.device, dtype: torch.dtype) -> TailoredPolicy:
    """The training policy: the base (or its approximate stand-in) and a fresh adapter on its initial model."""
    train_base = config.approx_base or config.base
    base = load_host(train_base, device, dtype)
    init = config.adapter_init or train_base
    adapter = base if init == train_base else load_host(init, device, dtype)
    check_same_tokenizer(base.tokenizer, train_base, adapter.tokenizer, init)
    card = AdapterCard(task=config.task, base_model=config.base, combination=config.combination, alpha=config.alpha,
                       algorithm=config.algo, n_reward_tokens=config.n_reward_tokens, lora_r=config.lora_r,
                       lora_alpha=2 * config.lora_r, training=config_dict(config))
    torch.manual_seed(config.seed)  # the same LoRA initialisation in every process
    if config.init_adapter:
        previous = adapter.load_adapter(config.name, config.init_adapter)
        if previous.n_reward_tokens != card.n_reward_tokens or previous.combination != card.combination:
            raise TrainError(f"--init-adapter {config.init_adapter} was trained with {previous.algorithm}/{previous.combination}; "
                             f"it cannot continue as {config.algo}/{config.combination}.")
        card.training = {**config_dict(config), "continued_from": {"steps": previous.steps, "seconds": previous.train_seconds,
                                                                   "machine": previous.machine,
                                                                   "metrics_before": previous.metrics_before}}
        card.adapter_init_model, card.init_fingerprint = previous.adapter_init_model, previous.init_fingerprint
        adapter.cards[config.name] = card
    else:
        adapter.new_adapter(config.name, card)
        card.adapter_init_model = init
    adapter.set_trainable(config.name, True)
    return TailoredPolicy(base, adapter, config.name, config.combination, cache=config.cache)


def setup(config: TrainConfig, accelerator=None) -> Run:
    """Load data, models and scorer; resume from a checkpoint when asked."""
    from tasks import get_task, load_inputs, load_scorer

    task = get_task(config.task)
    run_dir = Path(config.out) if config.out else default_run_dir(config)
    checkpoint = None
    if config.resume:
        checkpoint = find_checkpoint(run_dir)
        if checkpoint is None:
            raise TrainError(f"--resume: there is no checkpoint in {run_dir} (looked for {run_dir}/checkpoint).")
    _check_writable(run_dir)
    train_inputs = load_inputs(config.task, config.prompts or None, split="train")
    eval_inputs = load_inputs(config.task, config.prompts or None, split="eval", limit=config.eval_prompts)
    if not config.max_new_tokens:
        config.max_new_tokens = int(task.decode.get("max_new_tokens", 32))
    if accelerator is not None:
        device = accelerator.device
    else:
        device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    policy = build_policy(config, device, dtype)
    scorer = load_scorer(config.task, device=str(device))
    params = policy.adapter.trainable_parameters(config.name)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    run = Run(config, run_dir, policy, task, scorer, train_inputs, eval_inputs, optimizer, device,
              pool=DataPool(config.n_quantiles, config.pool_size) if config.algo == "quark" else None,
              accelerator=accelerator)
    if accelerator is not None:
        run.rank, run.world_size = accelerator.process_index, accelerator.num_processes
    if checkpoint is not None:
        state, tensors = load_checkpoint(checkpoint, policy.adapter, config.name, optimizer)
        run.step, run.elapsed, run.metrics_before = state["step"], state["elapsed"], state["metrics_before"]
        if run.pool is not None and tensors:
            run.pool.load_tensors(tensors)
        _truncate_log(run_dir / "metrics.jsonl", run.step)
    return run


def _truncate_log(path: Path, step: int) -> None:
    # Steps after the checkpoint were lost with the kill; they will be done again.
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in kept))


# --- evaluation on held-back prompts ---------------------------------------------------------------------


def evaluate(run: Run, label: str) -> dict:
    """Mean reward (and parts), KL to the base, perplexity and distinct-2 of the tailored policy on the
    held-back prompts, with fixed random numbers so that evaluations are comparable."""
    task, policy, config = run.task, run.policy, run.config
    prompts = [task.build_prompt(x, policy.tokenizer) for x in run.eval_inputs]
    settings = {**task.decode, "max_new_tokens": config.max_new_tokens, "alpha": config.alpha, "seed": 1234}
    result = generate(policy, prompts, DecodeConfig(**settings), n=config.eval_samples, columns=("tailored",))
    texts = [c.text for c in result.tailored]
    inputs = [run.eval_inputs[c.prompt_index] for c in result.tailored]
    scores = run.scorer(inputs, texts)
    metrics = {"label": label, "step": run.step}
    for key in scores[0]:
        if isinstance(scores[0][key], (int, float)):
            metrics[key if key == "reward" else f"reward_{key}"] = sum(s[key] for s in scores) / len(scores)
    metrics["mean_reward"] = metrics.pop("reward")
    tokens = [c for c in result.tailored if c.base_logprobs]
    all_lp = [lp for c in tokens for lp in c.base_logprobs]
    metrics["perplexity"] = math.exp(-sum(all_lp) / max(1, len(all_lp)))
    metrics["kl_per_token"] = sum(k for c in tokens for k in c.kl) / max(1, sum(len(c.kl) for c in tokens))
    bigrams = [tuple(c.token_ids[i:i + 2]) for c in result.tailored for i in range(len(c.token_ids) - 1)]
    metrics["distinct_2"] = len(set(bigrams)) / max(1, len(bigrams))
    metrics["examples"] = [{"input": run.eval_inputs[c.prompt_index], "text": c.text, "reward": s["reward"]}
                           for c, s in list(zip(result.tailored, scores))[:3]]
    return metrics


# --- the loop --------------------------------------------------------------------------------------------


def training_scores(run: Run, inputs: list[dict], texts: list[str]) -> list[dict]:
    """The task's scores; with --relevance-weight w the reward trained on is reward × ((1 − w) + w · relevance)."""
    scores = run.scorer(inputs, texts)
    w = run.config.relevance_weight
    if w == 0:
        return scores
    sources = [run.task.source_text(x) for x in inputs]
    relevance = run.scorer.kit.relevance(sources, texts)
    return [{**s, "reward": s["reward"] * ((1 - w) + w * r), "task_reward": s["reward"], "relevance": r}
            for s, r in zip(scores, relevance)]


def _budget_left(run: Run) -> bool:
    config = run.config
    if config.steps and run.step >= config.steps:
        return False
    if config.minutes and run.elapsed >= config.minutes * 60:
        return False
    return True


def _append(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _sync_gradients(run: Run):
    """Average gradients across processes (data parallel through accelerate); None in one process."""
    if run.world_size == 1:
        return None
    params = run.policy.adapter.trainable_parameters(run.config.name)

    def sync():
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            param.grad = run.accelerator.reduce(param.grad, reduction="mean")
    return sync


def _any_process_stopping(run: Run, stop: bool) -> bool:
    if run.world_size == 1:
        return stop
    flag = torch.tensor([1.0 if stop else 0.0], device=run.device)
    return bool(run.accelerator.reduce(flag, reduction="sum").item() > 0)


def train(config: TrainConfig, on_event: Callable[[dict], None] | None = None,
          stop: threading.Event | None = None, accelerator=None, progress: bool = True) -> Path:
    """Run training to its budget (or until `stop` is set) and return the adapter's directory.

    on_event receives dicts: {"type": "step" | "eval" | "samples" | "checkpoint" | "done", ...}.
    """
    stop = stop or threading.Event()
    emit = on_event or (lambda event: None)
    run = setup(config, accelerator)
    config = run.config
    run_dir = run.run_dir
    if run.is_main:
        (run_dir / "config.json").write_text(json.dumps(config_dict(config), indent=2))
    continued = run.policy.adapter.cards[config.name].training.get("continued_from", {})
    if continued and not run.metrics_before:
        run.metrics_before = {**continued["metrics_before"], "label": "before (base, from the adapter continued)"}
    if not run.metrics_before:
        run.metrics_before = evaluate(run, "before")
        if run.is_main:
            _append(run_dir / "evals.jsonl", run.metrics_before)
        emit({"type": "eval", **run.metrics_before})

    per_step = config.batch_size // (config.group_size if config.algo == "pg" else 1)
    bar = tqdm(total=config.steps or None, initial=run.step, disable=not (progress and run.is_main),
               desc=f"{config.task}/{config.algo}", unit="step", dynamic_ncols=True)
    last_checkpoint = run.step
    while _budget_left(run) and not _any_process_stopping(run, stop.is_set()):
        started = time.perf_counter()
        rng = step_rng(config.seed, run.step, run.rank)
        chosen = [run.train_inputs[rng.randrange(len(run.train_inputs))] for _ in range(per_step)]
        prompts = [run.task.build_prompt(x, run.policy.tokenizer) for x in chosen]
        repeat = config.group_size if config.algo == "pg" else 1
        inputs = [x for x in chosen for _ in range(repeat)]

        def score(texts: list[str]) -> list[dict]:
            return training_scores(run, inputs, texts)

        if config.algo == "pg":
            stats = pg_step(run.policy, config, prompts, score, run.optimizer, run.step, run.rank, _sync_gradients(run))
        else:
            stats = quark_step(run.policy, config, prompts, score, run.optimizer, run.step, run.pool, run.rank, _sync_gradients(run))
        run.step += 1
        step_time = time.perf_counter() - started
        run.elapsed += step_time
        rewards = stats["rewards"]
        record = {"step": run.step, "reward": float(rewards.mean()), "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0}
        for key in stats["scores"][0]:
            if key != "reward" and isinstance(stats["scores"][0][key], (int, float)):
                record[f"reward_{key}"] = sum(s[key] for s in stats["scores"]) / len(stats["scores"])
        record.update({k: stats[k] for k in ("loss", "kl", "entropy", "grad_norm", "sample_s", "score_s", "update_s")})
        record.update({"lr": run.optimizer.param_groups[0]["lr"], "samples_per_s": len(rewards) * run.world_size / step_time,
                       "elapsed": run.elapsed})
        if run.is_main:
            _append(run_dir / "metrics.jsonl", record)
        emit({"type": "step", **record, "total_steps": config.steps, "minutes": config.minutes})
        bar.update(1)
        bar.set_postfix(reward=f"{record['reward']:.3f}", kl=f"{record['kl']:.3f}")

        if config.samples_every and run.step % config.samples_every == 0:
            samples = [{"prompt": run.policy.tokenizer.decode(p, skip_special_tokens=True)[-200:], "text": t, "reward": float(r)}
                       for p, t, r in list(zip(stats["prompt_ids"], stats["texts"], rewards))[:4]]
            if run.is_main:
                _append(run_dir / "samples.jsonl", {"step": run.step, "samples": samples})
            emit({"type": "samples", "step": run.step, "samples": samples})
        if config.eval_every and run.step % config.eval_every == 0 and _budget_left(run):
            metrics = evaluate(run, "during")
            if run.is_main:
                _append(run_dir / "evals.jsonl", metrics)
            emit({"type": "eval", **metrics})
        if config.checkpoint_every and run.step - last_checkpoint >= config.checkpoint_every:
            _checkpoint(run)
            last_checkpoint = run.step
            emit({"type": "checkpoint", "step": run.step})
    bar.close()

    _checkpoint(run)
    interrupted = _budget_left(run)
    metrics_after = evaluate(run, "after")
    adapter_dir = run_dir / "adapter"
    if run.is_main:
        _append(run_dir / "evals.jsonl", metrics_after)
        card = run.policy.adapter.cards[config.name]
        card.steps = run.step + continued.get("steps", 0)
        card.train_seconds = round(run.elapsed + continued.get("seconds", 0.0), 1)
        card.machine = machine_name(run.device) + (f" × {run.world_size} processes" if run.world_size > 1 else "")
        if continued:
            card.machine = f"{continued.get('machine', '?')} ({continued.get('steps', 0)} steps), then {card.machine} ({run.step} steps)"
        card.metrics_before = {k: v for k, v in run.metrics_before.items() if k != "examples"}
        card.metrics_after = {k: v for k, v in metrics_after.items() if k != "examples"}
        card.training = {**config_dict(config), "interrupted": interrupted,
                         **({"continued_from": {k: v for k, v in continued.items() if k != "metrics_before"}} if continued else {})}
        run.policy.adapter.save_adapter(config.name, adapter_dir)
    emit({"type": "eval", **metrics_after})
    emit({"type": "done", "adapter": str(adapter_dir), "step": run.step, "interrupted": interrupted,
          "metrics_before": run.metrics_before, "metrics_after": metrics_after})
    return adapter_dir


def _checkpoint(run: Run) -> None:
    if not run.is_main:
        return
    state = {"step": run.step, "elapsed": run.elapsed, "metrics_before": run.metrics_before,
             "config": config_dict(run.config), "rng": "derived from (seed, step, rank)"}
    tensors = run.pool.to_tensors() if run.pool is not None and len(run.pool) else None
    save_checkpoint(run.run_dir / "checkpoint", run.policy.adapter, run.config.name, run.optimizer, state, tensors)


# --- command line ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m adapters.train", description=__doc__.split("\n\n")[0])
    add_dataclass_args(parser, TrainConfig, defaults={"steps": None})
    return parser


def _accelerator_if_launched():
    """An accelerate.Accelerator when started by `accelerate launch` with several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator
        return Accelerator()
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps is not None and args.steps <= 0:
        exit_with_user_error(f"--steps must be positive, got {args.steps}.")
    stop = threading.Event()

    def request_stop(signum, frame):
        if stop.is_set():  # a second Ctrl-C stops at once; the last checkpoint remains
            raise KeyboardInterrupt
        print("\nStopping after this step: writing a checkpoint and the adapter ...", file=sys.stderr)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        from tasks import TaskInputError
        from tasks.data import DataError
        user_errors = (TrainError, DecodeError, AdapterError, ModelLoadError, TaskInputError, DataError, KeyError)
        config = dataclass_from_args(TrainConfig, args, steps=args.steps or 0)
        adapter_dir = train(config, stop=stop, accelerator=_accelerator_if_launched())
    except user_errors as err:
        exit_with_user_error(str(err).strip("'\""))
    print(f"adapter written to {adapter_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
