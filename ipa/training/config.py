"""What both RL algorithms share: the settings, the tailored policy's log-probabilities with gradients,
group advantages, checkpoints that survive a kill, and held-back evaluation.

The adapter is the only thing that trains: LoRA weights (and Quark's reward-token embeddings). The
base runs under `torch.no_grad()` with every adapter switched off.
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ipa.errors import UserError, check_number
from ipa.loading import ModelConfig
from ipa.files import atomic_directory, recover_directory
from ipa.models import logits_at
from ipa.policy_adapter import ALGORITHMS, COMBINATIONS, MAX_LORA_R, AdapterHost
from ipa.decoding.policy_math import tailored_logprobs
from ipa.decoding.run import DecodeConfig, DecodeError, TailoredPolicy
from ipa.tasks import TaskInputError
from ipa.tasks.objective import CUSTOM_TASK, scoring_target

DEFAULT_TASK = "toxicity"
DEFAULT_STEPS = 20
"""Steps of a run given neither --steps nor --minutes."""
QUARK_TOP_P = 0.6
"""Quark samples with top-p 0.6, as the official IPA code does (pg: the task's own top-p)."""


class TrainError(UserError):
    """Bad training settings or state; the message says what to change."""


def _check(value, name: str, low: float, high: float | None = None, whole: bool = False):
    return check_number(value, name, low, high, whole=whole, error=TrainError)


@dataclass
class AlgoConfig:
    """The RL algorithm and its hyperparameters (the paper's symbols where it has them)."""

    algo: str = "pg"
    """'pg' (group-baseline policy gradient, the default: it measured best) or 'quark' (the paper's)."""
    batch_size: int = 16
    """Samples per step (prompts × group_size). 256 on a GPU, as in docs/design.md."""
    group_size: int = 4
    """pg: samples per prompt; the group's mean reward is the baseline."""
    micro_batch_size: int = 16
    """Rows per forward/backward pass (gradients accumulate): bounds memory."""
    lr: float = 5e-5
    """AdamW learning rate."""
    kl_coef: float = 0.05
    """Weight of KL(tailored || base) per token."""
    entropy_coef: float = 0.06
    """quark: weight of the entropy bonus."""
    n_quantiles: int = 5
    """quark: reward quantiles (reward tokens)."""
    pool_size: int = 4096
    """quark: the data pool keeps this many most recent samples."""
    combination: str = "residual"
    """'residual' (default) or 'paper' (see ipa.decoding.policy_math.compose_logits)."""
    lora_r: int = 8
    """LoRA rank (8 keeps a 135M adapter under 10 MB)."""
    relevance_weight: float = 0.0
    """Train on reward × ((1 − w) + w · relevance to the input), w in [0, 1]: keeps a policy on the prompt's
    topic where the task reward alone lets it drift to bland text (docs/design.md). 0: the task reward alone."""

    def __post_init__(self):
        if self.algo not in ALGORITHMS:
            raise TrainError(f"Unknown algorithm {self.algo!r}: use one of {', '.join(ALGORITHMS)}.")
        if self.combination not in COMBINATIONS:
            raise TrainError(f"Unknown combination {self.combination!r}: use one of {', '.join(COMBINATIONS)}.")
        self.batch_size = _check(self.batch_size, "batch_size", 1, None, whole=True)
        self.micro_batch_size = _check(self.micro_batch_size, "micro_batch_size", 1, None, whole=True)
        self.group_size = _check(self.group_size, "group_size", 2 if self.algo == "pg" else 1, None, whole=True)
        if self.algo == "pg" and self.batch_size % self.group_size:
            raise TrainError(f"batch_size ({self.batch_size}) must be a multiple of group_size ({self.group_size}).")
        self.n_quantiles = _check(self.n_quantiles, "n_quantiles", 2, None, whole=True)
        self.pool_size = _check(self.pool_size, "pool_size", 1, None, whole=True)
        self.lora_r = _check(self.lora_r, "lora_r", 1, MAX_LORA_R, whole=True)
        self.lr = _check(self.lr, "lr", 1e-12, 1.0)
        self.kl_coef = _check(self.kl_coef, "kl_coef", 0)
        self.entropy_coef = _check(self.entropy_coef, "entropy_coef", 0)
        self.relevance_weight = _check(self.relevance_weight, "relevance_weight", 0, 1)

    @property
    def samples_per_prompt(self) -> int:
        """pg samples a group per prompt; Quark one sample per prompt."""
        return self.group_size if self.algo == "pg" else 1

    @property
    def prompts_per_step(self) -> int:
        return self.batch_size // self.samples_per_prompt

    @property
    def n_reward_tokens(self) -> int:
        return self.n_quantiles if self.algo == "quark" else 0


@dataclass
class RunConfig:
    """One run: what it trains for, its budget, its files and its schedule."""

    task: str = DEFAULT_TASK
    """The task to train for (a key of ipa.tasks.TASKS)."""
    objective: str = ""
    """An objective's JSON file (docs/objectives.md) to train for instead of a task: its prompts, held-back split
    and blocks make the run, its name the adapter's; the card keeps the objective."""
    reward_module: str = ""
    """The objective's reward classes written in Python: FILE.py:ClassName (several: separated by commas)."""
    steps: int = 0
    """Training steps (0: bounded by --minutes alone; with neither, 20 steps)."""
    minutes: float = 0.0
    """Wall-clock budget in minutes (0: bounded by --steps alone)."""
    out: str = ""
    """Run directory (default: runs/<task>-<algo>-<time>). The adapter is written to <out>/adapter."""
    prompts: str = ""
    """A prompts file in any format of ipa.tasks.data (default: the task's training split of data/)."""
    seed: int = 0
    """Seed: prompt order and sampling are derived from (seed, step), so a resumed run repeats exactly."""
    name: str = ""
    """The adapter's name (default: the task's)."""
    init_adapter: str = ""
    """Start from this saved adapter's weights (same task and settings) instead of a fresh one."""
    resume: bool = False
    """Continue from <out>/checkpoint."""
    eval_every: int = 25
    """Evaluate on held-back prompts every this many steps (0: only before and after)."""
    eval_prompts: int = 16
    """Held-back prompts per evaluation."""
    eval_samples: int = 2
    """Samples per held-back prompt."""
    samples_every: int = 10
    """Write example generations to samples.jsonl every this many steps (0: never)."""
    checkpoint_every: int = 25
    """Checkpoint every this many steps (0: by time alone; also on Ctrl-C / SIGTERM and at the end)."""
    checkpoint_minutes: float = 2.0
    """Also checkpoint when this many minutes of training have passed since the last checkpoint (0: by steps
    alone); the first step is always checkpointed, so a run killed after it can resume."""

    def __post_init__(self):
        self.steps = _check(self.steps, "steps", 0, None, whole=True)
        self.minutes = _check(self.minutes, "minutes", 0)
        self.seed = _check(self.seed, "seed", 0, 2**63 - 1, whole=True)
        for name in ("eval_every", "samples_every", "checkpoint_every"):
            setattr(self, name, _check(getattr(self, name), name, 0, None, whole=True))
        self.eval_prompts = _check(self.eval_prompts, "eval_prompts", 1, None, whole=True)
        self.eval_samples = _check(self.eval_samples, "eval_samples", 1, None, whole=True)
        self.checkpoint_minutes = _check(self.checkpoint_minutes, "checkpoint_minutes", 0)
        if self.objective:
            if self.task not in (DEFAULT_TASK, CUSTOM_TASK):
                raise TrainError(f"Give a task or an objective, not both (got task {self.task!r} and objective {self.objective}).")
            self.task = CUSTOM_TASK
        elif self.reward_module:
            raise TrainError("--reward-module gives blocks to an objective: give the objective too (--objective FILE.json).")
        elif self.task == CUSTOM_TASK:
            raise TrainError(f"Task {CUSTOM_TASK!r} is an objective's: give the objective (--objective FILE.json).")
        self.target  # an unknown task, a bad objective or a failing reward module: an error now, before models load

    @functools.cached_property
    def target(self):
        """What the run trains for (a ipa.tasks.objective.Target): the task, or the objective with its prompts and blocks."""
        try:
            return scoring_target(task=None if self.objective else self.task, objective=self.objective or None,
                                  reward_modules=self.reward_module, prompts=self.prompts or None)
        except TaskInputError as err:
            raise TrainError(str(err)) from None

    @property
    def max_steps(self) -> int:
        """The step budget: --steps, else none when --minutes bounds the run, else DEFAULT_STEPS."""
        return self.steps or (0 if self.minutes else DEFAULT_STEPS)

    @property
    def adapter_name(self) -> str:
        return self.name or self.target.name


@dataclass
class TrainConfig:
    """One training run, one dataclass per concern; the command line is derived from them (ipa.args), and
    config.json and the card's `training` hold exactly these values."""

    run: RunConfig = field(default_factory=RunConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    decode: DecodeConfig | None = None
    """Sampling during training (alpha, temperature, top-p, tokens per sample; the seed comes from run.seed and
    the step). None: the task's decoding defaults, with top-p 0.6 for Quark (the official IPA code's)."""

    def __post_init__(self):
        if self.decode is None:
            self.decode = training_decode(self.run.target.task, self.algo.algo)
        if self.decode.alpha <= 0:
            raise TrainError(f"alpha must be more than 0 during training (0 would train nothing), got {self.decode.alpha}.")

    @property
    def n_reward_tokens(self) -> int:
        return self.algo.n_reward_tokens

    @classmethod
    def from_fields(cls, **values) -> "TrainConfig":
        """A config from flat field names, each routed to its concern (as the command line does):
        `TrainConfig.from_fields(task="sentiment", lr=1e-3, max_new_tokens=16)`. An unknown name is a TrainError."""
        parts = {}
        for concern, kind in (("run", RunConfig), ("algo", AlgoConfig), ("model", ModelConfig)):
            names = {f.name for f in fields(kind)}
            parts[concern] = kind(**{k: values.pop(k) for k in list(values) if k in names})
        decode_names = {f.name for f in fields(DecodeConfig)} - {"seed"}
        decode = {k: values.pop(k) for k in list(values) if k in decode_names}
        if values:
            raise TrainError(f"Unknown training setting(s) {', '.join(sorted(values))}.")
        return cls(**parts, decode=training_decode(parts["run"].target.task, parts["algo"].algo, **decode))


def training_decode(task, algo: str, **overrides) -> DecodeConfig:
    """Sampling settings of a training run: the task's decoding defaults (Quark: top-p 0.6), then `overrides`.
    task: a ipa.tasks.Task (an objective's too: RunConfig.target.task) or a task's name."""
    from ipa.tasks import TaskInputError, get_task

    try:
        defaults = DecodeConfig.for_task(get_task(task) if isinstance(task, str) else task)
    except TaskInputError as err:
        raise TrainError(str(err)) from None
    if algo == "quark":
        defaults = replace(defaults, top_p=QUARK_TOP_P)
    try:
        return replace(defaults, **overrides)
    except DecodeError as err:
        raise TrainError(str(err)) from None


def step_rng(seed: int, step: int, rank: int = 0, stream: str = "prompts") -> random.Random:
    """A random source of one step: derived, not carried, so a resumed run draws the same batch. Each use has its
    own stream (the prompts drawn, Quark's pool draw, ...), so that two draws of one step are not the same numbers."""
    return random.Random(f"{seed}/{step}/{rank}" + ("" if stream == "prompts" else f"/{stream}"))


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    return step_rng(seed, step, rank).randrange(2**31)


# --- the tailored policy's log-probabilities, with gradients for the adapter ----------------------------------


def _pack(prompt_ids: list[list[int]], completion_ids: torch.Tensor, pad_id: int, prefix: bool):
    """Left-padded prompt, completion right after it, and a free slot before each prompt for a reward token.

    Returns input_ids (S, L), attention mask (S, L), the prefix slot index per row (S,) or None.
    """
    S, T = completion_ids.shape
    width = max(len(p) for p in prompt_ids) + int(prefix)
    ids = torch.full((S, width + T), pad_id, dtype=torch.long)
    mask = torch.zeros((S, width + T), dtype=torch.long)
    slots = torch.zeros(S, dtype=torch.long)
    for r, prompt in enumerate(prompt_ids):
        ids[r, width - len(prompt):width] = torch.tensor(prompt, dtype=torch.long)
        mask[r, width - len(prompt) - int(prefix):] = 1
        slots[r] = width - len(prompt) - 1
    ids[:, width:] = completion_ids
    return ids, mask, (slots if prefix else None)


def _completion_logits(model, ids, mask, T, embeds=None) -> torch.Tensor:
    """Next-token logits at the T completion positions.  -> (S, T, V)"""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    inputs = {"inputs_embeds": embeds} if embeds is not None else {"input_ids": ids}
    hidden = model.get_decoder()(**inputs, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
    return logits_at(model, hidden, slice(-(T + 1), -1)).float()


def tailored_token_stats(
    policy: TailoredPolicy,
    prompt_ids: list[list[int]],
    completion_ids: torch.Tensor,
    alpha: float,
    reward_tokens: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-token statistics of the tailored policy on given samples; gradients reach the adapter only.

    prompt_ids: S lists of ids; completion_ids: (S, T); reward_tokens: (S,) quantile index per row (Quark).
    Returns logprob (S, T) of each chosen token under the tailored policy, kl (S, T) = KL(tailored || base)
    and entropy (S, T) of the tailored distribution.
    """
    base, adapter, name = policy.base, policy.adapter, policy.adapter_name
    device = base.base_model.device
    pad_id = base.tokenizer.pad_token_id
    T = completion_ids.shape[1]
    ids, mask, _ = _pack(prompt_ids, completion_ids, pad_id, prefix=False)
    ids, mask = ids.to(device), mask.to(device)
    with torch.no_grad(), base.base_only() as frozen:
        base_logits = _completion_logits(frozen, ids, mask, T)  # (S, T, V)
    if policy.combination == "residual" and not policy.shares_weights:
        with torch.no_grad(), adapter.base_only() as init_model:
            init_logits = _completion_logits(init_model, ids, mask, T)
    else:
        init_logits = base_logits  # the adapter sits on the base's weights: its initial logits are the base's

    with adapter.only(name) as adapted:
        if reward_tokens is not None:
            p_ids, p_mask, slots = _pack(prompt_ids, completion_ids, pad_id, prefix=True)
            p_ids, p_mask = p_ids.to(device), p_mask.to(device)
            embeds = adapter.input_embeddings()(p_ids)
            rows = torch.arange(len(prompt_ids), device=device)
            token_embeds = adapter.reward_embeddings[name][reward_tokens.to(device)].to(embeds.dtype)
            embeds = embeds.index_put((rows, slots.to(device)), token_embeds)
            adapter_logits = _completion_logits(adapted, p_ids, p_mask, T, embeds=embeds)
        else:
            adapter_logits = _completion_logits(adapted, ids, mask, T)

    # Clamped so that tokens with no mass give 0 · finite, not 0 · (−inf) = NaN, in KL, entropy and gradients.
    tailored = tailored_logprobs(base_logits, [adapter_logits], init_logits, [alpha], policy.combination).clamp(min=-1e4)
    base_logprobs = torch.log_softmax(base_logits, dim=-1).clamp(min=-1e4)
    probs = tailored.exp()
    return {
        "logprob": tailored.gather(-1, completion_ids.to(device).unsqueeze(-1)).squeeze(-1),
        "kl": (probs * (tailored - base_logprobs)).sum(-1),
        "entropy": -(probs * tailored).sum(-1),
    }


def apply_gradients(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], max_norm: float = 1.0) -> float:
    """Clip and step; a non-finite gradient norm skips the step (the weights stay finite). Returns the norm."""
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm).item()
    if math.isfinite(grad_norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


# --- checkpoints: written to a temporary directory, then renamed ------------------------------------------------


def save_checkpoint(directory: Path, host: AdapterHost, name: str, optimizer: torch.optim.Optimizer, state: dict,
                    tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Adapter, optimizer, run state and extra tensors (e.g. Quark's pool), atomically: a kill at any moment
    leaves either the previous checkpoint or the new one, never half of one."""
    with atomic_directory(directory) as tmp:
        host.save_adapter(name, tmp / "adapter")
        opt_tensors, opt_meta = _optimizer_to_tensors(optimizer, host.trainable_parameters(name))
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        if tensors:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / "state.safetensors")
        (tmp / "state.json").write_text(json.dumps({**state, "optimizer": opt_meta}, indent=2))


def find_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run (the previous one if a kill fell between the two renames)."""
    # 'checkpoint.old': where saves before ipa.files kept the previous checkpoint
    for candidate in (recover_directory(run_dir / "checkpoint"), run_dir / "checkpoint.old"):
        if (candidate / "state.json").is_file():
            return candidate
    return None


def load_checkpoint(directory: Path, host: AdapterHost, name: str, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Restore adapter weights and optimizer state in place; returns (state, extra tensors)."""
    from peft import set_peft_model_state_dict

    state = json.loads((directory / "state.json").read_text())
    adapter_dir = directory / "adapter"
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    set_peft_model_state_dict(host.peft, weights, adapter_name=name)
    if name in host.reward_embeddings:
        with torch.no_grad():
            host.reward_embeddings[name].copy_(load_file(adapter_dir / "reward_tokens.safetensors")["reward_embeddings"])
    _optimizer_from_tensors(optimizer, host.trainable_parameters(name), load_file(directory / "optimizer.safetensors"), state["optimizer"])
    extra = load_file(directory / "state.safetensors") if (directory / "state.safetensors").is_file() else {}
    return state, extra


def _optimizer_to_tensors(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> tuple[dict, dict]:
    # Safetensors and JSON instead of torch.save: nothing in a checkpoint is a pickle.
    tensors, steps = {}, {}
    for i, param in enumerate(params):
        for key, value in optimizer.state.get(param, {}).items():
            if torch.is_tensor(value):
                tensors[f"{i}.{key}"] = value.detach().cpu().contiguous()
            else:
                steps[f"{i}.{key}"] = value
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return tensors, {"param_groups": groups, "scalars": steps, "n_params": len(params)}


def _optimizer_from_tensors(optimizer, params, tensors: dict, meta: dict) -> None:
    if meta["n_params"] != len(params):
        raise TrainError(f"The checkpoint has optimizer state for {meta['n_params']} tensors, the adapter has {len(params)}.")
    for group, saved in zip(optimizer.param_groups, meta["param_groups"]):
        group.update(saved)
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        param = params[int(index)]
        optimizer.state[param][name] = value.to(param.device)
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        optimizer.state[params[int(index)]][name] = value


def now() -> float:
    return time.perf_counter()


def config_dict(config: TrainConfig) -> dict:
    return asdict(config)
