"""Train a policy adapter with reinforcement learning: the loop and its command line.

    ipa train --task toxicity --minutes 2
    ipa train --task commongen --algo quark --steps 200 --batch-size 256 --device cuda
    ipa train --task toxicity --out runs/tox --resume          # after Ctrl-C or a kill
    ipa train --objective objectives/cheerful-ocean.json --minutes 3   # your own objective
    accelerate launch --num_processes 2 -m ipa.training.loop --task toxicity ...  # data parallel

One step (`rl_step`, in the paper's order): draw prompts, sample from the tailored policy, score, turn
rewards into advantages (pg) or quantiles (Quark), the loss, the update, the log. The two algorithms differ
only where the paper does (ipa.training.pg, ipa.training.quark). Every step goes to <out>/metrics.jsonl; example
generations to samples.jsonl; held-back evaluations to evals.jsonl; checkpoints to <out>/checkpoint
(atomically: after the first step, then every --checkpoint-every steps or --checkpoint-minutes, on Ctrl-C /
SIGTERM and at the end); the trained adapter to <out>/adapter, its card written once, at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ipa.errors import UserError
from ipa.args import add_dataclass_args, dataclass_from_args, exit_with_user_error
from ipa.loading import ModelConfig, initial_model_name, load_host, pair
from ipa.models import machine_name
from ipa.training.pg import group_advantages, pg_token_loss
from ipa.policy_adapter import AdapterCard
from ipa.training.quark import DataPool, pool_batch, quark_token_loss
from ipa.decoding.run import DecodeConfig, TailoredPolicy
from ipa.decoding.engine import generate, sample
from ipa.training.config import (
    AlgoConfig,
    RunConfig,
    TrainConfig,
    TrainError,
    apply_gradients,
    config_dict,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
    step_rng,
    step_seed,
    tailored_token_stats,
    training_decode,
)
from ipa.tasks.metrics import OBJECTIVE_PARTS, column_metrics, reward_means

EVAL_SEED = 1234
"""Held-back evaluations use fixed random numbers, so that evaluations of one run are comparable."""


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
    """Quark's data pool (None for pg)."""
    step: int = 0
    elapsed: float = 0.0
    """Seconds spent in training steps (evaluations and checkpoints excluded)."""
    metrics_before: dict = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1
    accelerator: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def name(self) -> str:
        return self.config.run.adapter_name


# --- set-up ----------------------------------------------------------------------------------------------


def default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.run.target.name}-{config.algo.algo}-{time.strftime('%Y%m%d-%H%M%S')}"


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
    models, algo, name = config.model, config.algo, config.run.adapter_name
    train_base = models.approx_base or models.base
    base = load_host(train_base, device, dtype)
    init = initial_model_name(models.adapter_init, train_base)
    adapter = base if init == train_base else load_host(init, device, dtype)
    pair(base, adapter)
    objective = config.run.target.objective
    card = AdapterCard(task=config.run.task, objective=objective.to_dict() if objective else {},
                       base_model=models.base, combination=algo.combination,
                       alpha=config.decode.alpha, algorithm=algo.algo, n_reward_tokens=algo.n_reward_tokens,
                       lora_r=algo.lora_r, lora_alpha=2 * algo.lora_r)
    torch.manual_seed(config.run.seed)  # the same LoRA initialisation in every process
    if config.run.init_adapter:
        previous = adapter.load_adapter(name, config.run.init_adapter)
        if previous.n_reward_tokens != card.n_reward_tokens or previous.combination != card.combination:
            raise TrainError(f"init_adapter {config.run.init_adapter} was trained with {previous.algorithm}/{previous.combination}; "
                             f"it cannot continue as {algo.algo}/{algo.combination}.")
        card.training = {"continued_from": {"steps": previous.steps, "seconds": previous.train_seconds,
                                            "machine": previous.machine, "metrics_before": previous.metrics_before}}
        card.adapter_init_model, card.init_fingerprint = previous.adapter_init_model, previous.init_fingerprint
        adapter.cards[name] = card
    else:
        adapter.new_adapter(name, card)
        card.adapter_init_model = init
    adapter.set_trainable(name, True)
    return TailoredPolicy(base, adapter, name, algo.combination)


def setup(config: TrainConfig, accelerator=None) -> Run:
    """Load data, models and scorer; resume from a checkpoint when asked."""
    run_config = config.run
    target = run_config.target  # the task, or the objective with its prompts and blocks
    run_dir = Path(run_config.out) if run_config.out else default_run_dir(config)
    checkpoint = None
    if run_config.resume:
        checkpoint = find_checkpoint(run_dir)
        if checkpoint is None:
            raise TrainError(f"resume: there is no checkpoint in {run_dir} (looked for {run_dir}/checkpoint).")
    _check_writable(run_dir)
    train_inputs = target.inputs("train")
    eval_inputs = target.inputs("eval", limit=run_config.eval_prompts)
    if accelerator is not None:
        device, dtype = accelerator.device, config.model.resolve()[1]
    else:
        device, dtype = config.model.resolve()
    policy = build_policy(config, device, dtype)
    scorer = target.scorer(device=str(device))
    optimizer = torch.optim.AdamW(policy.adapter.trainable_parameters(run_config.adapter_name), lr=config.algo.lr, weight_decay=0.0)
    run = Run(config, run_dir, policy, target.task, scorer, train_inputs, eval_inputs, optimizer, device,
              pool=DataPool(config.algo.n_quantiles, config.algo.pool_size) if config.algo.algo == "quark" else None,
              accelerator=accelerator)
    if accelerator is not None:
        run.rank, run.world_size = accelerator.process_index, accelerator.num_processes
    if checkpoint is not None:
        state, tensors = load_checkpoint(checkpoint, policy.adapter, run.name, optimizer)
        saved, given = state.get("objective") or {}, target.objective.to_dict() if target.objective else {}
        if saved != given:
            what = lambda o: f"the objective {json.dumps(o)}" if o else "a task"  # noqa: E731
            raise TrainError(f"resume: the checkpoint in {run_dir} was made for {what(saved)}, not {what(given)}: "
                             "give the same --objective to continue it, or a new --out to start afresh.")
        run.step, run.elapsed, run.metrics_before = state["step"], state["elapsed"], state["metrics_before"]
        if run.pool is not None and tensors:
            run.pool.load_tensors(tensors)
        if run.is_main:
            print(f"resuming {run_dir} from its checkpoint at step {run.step}", file=sys.stderr, flush=True)
    if run.is_main:  # what came after the checkpoint was lost with the kill and is done again; a new run starts clean
        for log in LOGS:
            _truncate_log(run_dir / log, run.step if checkpoint is not None else -1)
    return run


LOGS = ("metrics.jsonl", "samples.jsonl", "evals.jsonl")
"""A run's logs: one JSON record a line, each with its step."""


def _truncate_log(path: Path, step: int) -> None:
    """Keep the records of steps up to `step` (the "before" evaluation is step 0; -1 keeps nothing), except an
    "after" evaluation: the resumed run ends with its own."""
    if path.is_file():
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line half-written when the process was killed
                continue
        kept = [json.dumps(r) for r in records if r.get("step", 0) <= step and r.get("label") != "after"]
        path.write_text("".join(line + "\n" for line in kept))


# --- evaluation on held-back prompts ---------------------------------------------------------------------


def evaluate(run: Run, label: str) -> dict:
    """The tailored policy's metrics on the held-back prompts (ipa.tasks.metrics.column_metrics: mean reward and its
    parts, task rates, perplexity, distinct-n, KL per token), with fixed random numbers so that evaluations are
    comparable."""
    task, policy, decode, target = run.task, run.policy, run.config.decode, run.config.run.target
    prompts = [task.build_prompt(x, policy.tokenizer) for x in run.eval_inputs]
    settings = DecodeConfig.for_task(task, max_new_tokens=decode.max_new_tokens, alpha=decode.alpha, seed=EVAL_SEED)
    result = generate(policy, prompts, settings, n=run.config.run.eval_samples, columns=("tailored",))
    texts = [c.text for c in result.tailored]
    inputs = [run.eval_inputs[c.prompt_index] for c in result.tailored]
    scores = run.scorer(inputs, texts)
    # The definitions of ipa.tasks.metrics (ipa.evaluation.evaluate's too); the costly extras (relevance, standalone perplexity)
    # are left to ipa.evaluation.evaluate, never computed another way.
    metrics = {"label": label, "step": run.step,
               **column_metrics(target.card_task, run.eval_inputs, result.tailored, scores, run.config.run.eval_samples,
                                part_prefix=OBJECTIVE_PARTS if target.objective else "")}
    metrics["examples"] = [{"input": run.eval_inputs[c.prompt_index], "text": c.text, "reward": s["reward"]}
                           for c, s in list(zip(result.tailored, scores))[:3]]
    return metrics


# --- one step of RL, in the paper's order ----------------------------------------------------------------


def training_scores(run: Run, inputs: list[dict], texts: list[str]) -> list[dict]:
    """The task's scores; with relevance_weight w the reward trained on is reward × ((1 − w) + w · relevance)."""
    scores = run.scorer(inputs, texts)
    w = run.config.algo.relevance_weight
    if w == 0:
        return scores
    sources = [run.task.source_text(x) for x in inputs]
    relevance = run.scorer.kit.relevance(sources, texts)
    return [{**s, "reward": s["reward"] * ((1 - w) + w * r), "task_reward": s["reward"], "relevance": r}
            for s, r in zip(scores, relevance)]


def rl_step(run: Run, stop: threading.Event) -> dict | None:
    """One step: prompts, samples, rewards, advantages (pg) or quantiles (Quark), loss, update; returns the step's
    log record, or None when `stop` was set before the update (the adapter is then as it was)."""
    config, algo, policy = run.config, run.config.algo, run.policy
    started = time.perf_counter()
    # 1. Prompts, derived from (seed, step): a resumed run draws the batch it would have drawn.
    rng = step_rng(config.run.seed, run.step, run.rank)
    chosen = [run.train_inputs[rng.randrange(len(run.train_inputs))] for _ in range(algo.prompts_per_step)]
    prompts = [run.task.build_prompt(x, policy.tokenizer) for x in chosen]
    inputs = [x for x in chosen for _ in range(algo.samples_per_prompt)]

    # 2. Sample from the tailored policy (Quark: conditioned on the best reward token, which decoding prepends).
    decode = replace(config.decode, seed=step_seed(config.run.seed, run.step, run.rank))
    batch = sample(policy, prompts, decode, n=algo.samples_per_prompt, columns=("tailored",), stop=stop)
    if batch is None:
        return None
    lengths = batch.completion_mask.sum(-1).tolist()
    completions = [ids[:int(n)].tolist() for ids, n in zip(batch.completion_ids, lengths)]
    texts = [policy.tokenizer.decode(c, skip_special_tokens=True) for c in completions]
    sampled = time.perf_counter()

    # 3. Score.
    scores = training_scores(run, inputs, texts)
    rewards = torch.tensor([s["reward"] for s in scores], dtype=torch.float32)

    # 4. What each trained sample is pushed toward: its advantage within its group (pg), or its reward
    #    quantile's token, on a batch drawn from the pool of all samples so far (Quark).
    if algo.algo == "pg":
        prompt_ids, completion_ids, mask = batch.prompt_ids, batch.completion_ids, batch.completion_mask.float()
        advantages, reward_tokens = group_advantages(rewards, algo.group_size), None
    else:
        run.pool.add(batch.prompt_ids, completions, rewards.tolist())
        prompt_ids, completion_ids, mask, reward_tokens = pool_batch(
            run.pool, algo.batch_size, step_rng(config.run.seed, run.step, run.rank, "pool"), policy.tokenizer.pad_token_id)
        advantages = None
    scored = time.perf_counter()

    # 5. The loss, summed over tokens in micro-batches (gradients accumulate), 6. the update.
    total_tokens = mask.sum().clamp(min=1)
    run.optimizer.zero_grad(set_to_none=True)
    sums = {"loss": 0.0, "kl": 0.0, "entropy": 0.0}
    for rows in torch.arange(len(prompt_ids)).split(algo.micro_batch_size):
        if stop.is_set():
            run.optimizer.zero_grad(set_to_none=True)
            return None
        stats = tailored_token_stats(policy, [prompt_ids[r] for r in rows], completion_ids[rows], config.decode.alpha,
                                     reward_tokens=None if reward_tokens is None else reward_tokens[rows])
        m = mask[rows].to(stats["logprob"].device)
        if algo.algo == "pg":
            per_token = pg_token_loss(stats, advantages[rows].to(m.device))
        else:
            per_token = quark_token_loss(stats, algo.entropy_coef)
        loss = ((per_token + algo.kl_coef * stats["kl"]) * m).sum() / total_tokens
        loss.backward()
        sums["loss"] += loss.item()
        sums["kl"] += ((stats["kl"] * m).sum() / total_tokens).item()
        sums["entropy"] += ((stats["entropy"] * m).sum() / total_tokens).item()
    _sync_gradients(run)
    grad_norm = apply_gradients(run.optimizer, policy.adapter.trainable_parameters(run.name))
    updated = time.perf_counter()

    # 7. The log.
    run.step += 1
    run.elapsed += updated - started
    record = {"step": run.step, "reward": float(rewards.mean()),
              "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0}
    record.update({f"reward_{key}": value for key, value in reward_means(scores).items() if key != "reward"})
    record.update(sums, grad_norm=grad_norm, tokens=float(total_tokens), sample_s=sampled - started,
                  score_s=scored - sampled, update_s=updated - scored, lr=run.optimizer.param_groups[0]["lr"],
                  samples_per_s=len(rewards) * run.world_size / (updated - started), elapsed=run.elapsed)
    if run.pool is not None:
        record["pool_size"] = len(run.pool)
    record["examples"] = [{"prompt": policy.tokenizer.decode(p, skip_special_tokens=True)[-200:], "text": t, "reward": float(r)}
                          for p, t, r in list(zip(batch.prompt_ids, texts, rewards))[:4]]
    return record


# --- the loop --------------------------------------------------------------------------------------------


def _budget_left(run: Run) -> bool:
    if run.config.run.max_steps and run.step >= run.config.run.max_steps:
        return False
    if run.config.run.minutes and run.elapsed >= run.config.run.minutes * 60:
        return False
    return True


def _append(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _sync_gradients(run: Run) -> None:
    """Average gradients across processes (data parallel through accelerate); nothing in one process."""
    if run.world_size == 1:
        return
    for param in run.policy.adapter.trainable_parameters(run.name):
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        param.grad = run.accelerator.reduce(param.grad, reduction="mean")


def _any_process_stopping(run: Run, stop: bool) -> bool:
    if run.world_size == 1:
        return stop
    flag = torch.tensor([1.0 if stop else 0.0], device=run.device)
    return bool(run.accelerator.reduce(flag, reduction="sum").item() > 0)


class _CheckpointClock:
    """When to checkpoint: after the first step of a run, then every `every` steps or `minutes` of wall time."""

    def __init__(self, run: Run):
        self.every, self.minutes = run.config.run.checkpoint_every, run.config.run.checkpoint_minutes
        self.step, self.time = run.step, time.monotonic()
        self.first = run.step == 0

    def due(self, step: int) -> bool:
        if self.first:
            return True
        by_steps = self.every and step - self.step >= self.every
        by_time = self.minutes and time.monotonic() - self.time >= self.minutes * 60
        return bool(by_steps or by_time)

    def done(self, step: int) -> None:
        self.step, self.time, self.first = step, time.monotonic(), False


def train(config: TrainConfig, on_event: Callable[[dict], None] | None = None,
          stop: threading.Event | None = None, accelerator=None, progress: bool = True, pause_at: int = 0) -> Path | None:
    """Run training to its budget (or until `stop` is set) and return the adapter's directory; None when it
    stopped before its first step (no adapter is written for a run that learned nothing).

    on_event receives dicts: {"type": "step" | "eval" | "samples" | "checkpoint" | "done", ...}.
    pause_at: with budget left after this step, checkpoint and return None without the final evaluation or the
    adapter (no "done" event): one chunk of a run that the next call continues with resume (app.training_jobs on
    a ZeroGPU Space, where the GPU is lent a call at a time).
    """
    stop = stop or threading.Event()
    emit = on_event or (lambda event: None)
    run = setup(config, accelerator)
    run_dir, every = run.run_dir, config.run
    if run.is_main:
        (run_dir / "config.json").write_text(json.dumps(config_dict(config), indent=2))
    continued = run.policy.adapter.cards[run.name].training.get("continued_from", {})
    if continued and not run.metrics_before:
        run.metrics_before = {**continued["metrics_before"], "label": "before (base, from the adapter continued)"}
    if not run.metrics_before:
        run.metrics_before = evaluate(run, "before")
        if run.is_main:
            _append(run_dir / "evals.jsonl", run.metrics_before)
        emit({"type": "eval", **run.metrics_before})

    bar = tqdm(total=every.max_steps or None, initial=run.step, disable=not (progress and run.is_main),
               desc=f"{every.target.name}/{config.algo.algo}", unit="step", dynamic_ncols=True)
    clock = _CheckpointClock(run)
    while _budget_left(run) and not (pause_at and run.step >= pause_at) and not _any_process_stopping(run, stop.is_set()):
        record = rl_step(run, stop)
        if record is None:  # stopped inside the step: it is dropped, the adapter is as after the last one
            continue
        examples = record.pop("examples")
        if run.is_main:
            _append(run_dir / "metrics.jsonl", record)
        emit({"type": "step", **record, "total_steps": every.max_steps, "minutes": every.minutes})
        bar.update(1)
        bar.set_postfix(reward=f"{record['reward']:.3f}", kl=f"{record['kl']:.3f}")
        if every.samples_every and run.step % every.samples_every == 0:
            if run.is_main:
                _append(run_dir / "samples.jsonl", {"step": run.step, "samples": examples})
            emit({"type": "samples", "step": run.step, "samples": examples})
        if every.eval_every and run.step % every.eval_every == 0 and _budget_left(run):
            metrics = evaluate(run, "during")
            if run.is_main:
                _append(run_dir / "evals.jsonl", metrics)
            emit({"type": "eval", **metrics})
        if clock.due(run.step):
            _checkpoint(run)
            clock.done(run.step)
            emit({"type": "checkpoint", "step": run.step})
    bar.close()

    if pause_at and run.step >= pause_at and _budget_left(run) and not stop.is_set():
        if clock.step != run.step:  # not checkpointed at this step already
            _checkpoint(run)
        emit({"type": "checkpoint", "step": run.step, "paused": True})
        return None
    interrupted = _budget_left(run)
    if run.step == 0:
        emit({"type": "done", "adapter": None, "step": 0, "interrupted": True, "metrics_before": run.metrics_before,
              "metrics_after": None})
        return None
    _checkpoint(run)
    metrics_after = evaluate(run, "after")
    adapter_dir = run_dir / "adapter"
    if run.is_main:
        _append(run_dir / "evals.jsonl", metrics_after)
        _write_card(run, metrics_after, interrupted, continued)
        run.policy.adapter.save_adapter(run.name, adapter_dir)
    emit({"type": "eval", **metrics_after})
    emit({"type": "done", "adapter": str(adapter_dir), "step": run.step, "interrupted": interrupted,
          "metrics_before": run.metrics_before, "metrics_after": metrics_after, "models": run.policy.sizes})
    return adapter_dir


def _write_card(run: Run, metrics_after: dict, interrupted: bool, continued: dict) -> None:
    """The adapter's card, written once, at the end: steps, time, machine, settings, metrics before and after."""
    card = run.policy.adapter.cards[run.name]
    card.steps = run.step + continued.get("steps", 0)
    card.train_seconds = round(run.elapsed + continued.get("seconds", 0.0), 1)
    card.machine = machine_name(run.device) + (f" × {run.world_size} processes" if run.world_size > 1 else "")
    if continued:
        card.machine = f"{continued.get('machine', '?')} ({continued.get('steps', 0)} steps), then {card.machine} ({run.step} steps)"
    card.metrics_before = {k: v for k, v in run.metrics_before.items() if k != "examples"}
    card.metrics_after = {k: v for k, v in metrics_after.items() if k != "examples"}
    card.training = {**config_dict(run.config), "interrupted": interrupted,
                     **({"continued_from": {k: v for k, v in continued.items() if k != "metrics_before"}} if continued else {})}


def _checkpoint(run: Run) -> None:
    if not run.is_main:
        return
    objective = run.config.run.target.objective
    state = {"step": run.step, "elapsed": run.elapsed, "metrics_before": run.metrics_before,
             "objective": objective.to_dict() if objective else {},
             "config": config_dict(run.config), "rng": "derived from (seed, step, rank)"}
    tensors = run.pool.to_tensors() if run.pool is not None and len(run.pool) else None
    save_checkpoint(run.run_dir / "checkpoint", run.policy.adapter, run.name, run.optimizer, state, tensors)


# --- command line ----------------------------------------------------------------------------------------

DECODE_FLAGS_EXCLUDED = ("seed", "stop_at_eos", "min_new_tokens", "top_k")
"""Decoding fields training does not take from the command line (the seed is the run's)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipa train", description=__doc__.split("\n\n")[0])
    add_dataclass_args(parser, TrainConfig, exclude=("decode",))
    decode_fields = [f.name for f in dataclasses.fields(DecodeConfig) if f.name not in DECODE_FLAGS_EXCLUDED]
    # None = not given: the task's decoding default (Quark: top-p 0.6).
    add_dataclass_args(parser, DecodeConfig, exclude=DECODE_FLAGS_EXCLUDED, defaults={f: None for f in decode_fields})
    parser.add_argument("--json-events", action="store_true",
                        help="print each event of the run (eval, step, samples, checkpoint, done) as one JSON line on "
                             "stdout, for scripts that follow a run")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    run, algo = dataclass_from_args(RunConfig, args), dataclass_from_args(AlgoConfig, args)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(DecodeConfig)
             if f.name not in DECODE_FLAGS_EXCLUDED and getattr(args, f.name, None) is not None}
    return TrainConfig(run=run, algo=algo, model=dataclass_from_args(ModelConfig, args),
                       decode=training_decode(run.target.task, algo.algo, **given))


def _accelerator_if_launched():
    """An accelerate.Accelerator when started by `accelerate launch` with several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator
        return Accelerator()
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop = threading.Event()

    def request_stop(signum, frame):
        if stop.is_set():  # a second Ctrl-C stops at once; the last checkpoint remains
            raise KeyboardInterrupt
        print("\nStopping: writing a checkpoint and the adapter ...", file=sys.stderr)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        done = {}

        def on_event(event: dict) -> None:
            if event["type"] == "done":
                done.update(event)
            if args.json_events:
                print(json.dumps(event), flush=True)
        adapter_dir = train(config_from_args(args), on_event=on_event, stop=stop, accelerator=_accelerator_if_launched(),
                            progress=not args.json_events)
    except UserError as err:
        exit_with_user_error(str(err))
    if adapter_dir is None:
        print("stopped before the first step: no adapter written", file=sys.stderr)
        return 1
    if not args.json_events:  # the "done" event said it
        print(f"adapter written to {adapter_dir} ({done['models']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
