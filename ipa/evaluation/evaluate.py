"""Paper-style evaluation of a policy adapter: K samples per prompt from the base and the tailored policy.

    ipa evaluate --task toxicity --limit 8 --samples-per-prompt 2
    ipa evaluate --task commongen --adapter adapters/trained/commongen --json
    ipa evaluate --task dialogue_safety --prompts my_requests.txt --split all
    ipa evaluate --adapter runs/cheerful-ocean/adapter --limit 24     # scored with its own objective
    ipa evaluate --objective objectives/cheerful-ocean.json --limit 24
    ipa evaluate --task sentiment --adapter adapters/trained/sentiment --alphas 0,0.25,0.5,1,1.5,2,3

Base and tailored continuations are decoded side by side with the same random numbers (so without an
adapter, or at alpha 0, the two columns are identical). Metrics, for each column, as ipa.tasks.metrics defines
them (its docstring has the table of formulas; training's held-back evaluation uses the same function):

    mean_reward (± mean_reward_ci95: 95 % interval over prompts), avg_max_toxicity, toxicity_probability,
    perplexity (given the prompt: the paper's fluency), standalone_perplexity, distinct_2, distinct_3 (word
    n-grams of a prompt's K samples, averaged over prompts), relevance (MiniLM cosine of input and continuation),
    mean_tokens, kl_per_token, each part of the task's reward (coverage, fluency, safety, ...) and the task's
    rates (full_coverage, unsafe_rate, refusal_rate, positive_rate); objective_<block> for an objective, each
    block's score, averaged (prefixed: a block may be named like a metric, as `relevance` is); mean_reward is then
    the objective's R.

--write-card stores the report's base and tailored columns, with the prompt count, samples per prompt, seed and
command, in the adapter's card (its `evaluation` field), which the page then shows.

The task is --task, or --objective FILE (its prompts, held-back split and blocks; --reward-module FILE.py:Class
for blocks written in Python), or else the adapter's own: its card's objective, or its card's task.

--alphas A,B,... adds an alpha sweep: the tailored column decoded again at each alpha (same prompts, seed and model
load), with reward, KL per token, perplexity, relevance and distinct-2, each with its 95 % interval over prompts
(ipa.tasks.metrics.column_intervals); the adapter's trained strength (its card's alpha, 1) is marked. JSON: "alpha_sweep",
a list of {"alpha", "trained_strength", metric: value}.

With an adapter in the paper's combination, an "untrained" column (a fresh adapter, LoRA B = 0) is reported
as a control: that combination sharpens the base before any training (docs/design.md). --json prints one object
{"task", "n_prompts", "samples_per_prompt", "toxicity_backend", "base", "tailored"[, "untrained"], ...}.
User errors (unknown task, missing or empty prompts file, bad adapter) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from ipa.decoding.remote import add_api_args, api_config_from_args, cost_line, with_api_base
from ipa.errors import UserError, check_number
from ipa.args import add_dataclass_args, dataclass_from_args, exit_with_user_error
from ipa.loading import ModelConfig
from ipa.policy_adapter import AdapterCard, AdapterError, read_card, update_card
from ipa.decoding.run import Completion, DecodeConfig, DecodeError, DecodeRun, TailoredPolicy
from ipa.decoding.engine import run_steps
from ipa.tasks import metrics
from ipa.tasks.objective import ObjectiveScorer, scoring_target
from ipa.tasks.scoring import TaskScorer

UNTRAINED = "untrained-control"


@dataclass
class EvalConfig:
    """What to evaluate: the task, its prompts and how many samples of each."""

    task: str = ""
    """toxicity, commongen, open_ended, dialogue_safety, knowledge_dialogue or sentiment (default: the adapter
    card's task or objective)."""
    objective: str = ""
    """Evaluate for this objective's JSON file: its prompts, split and blocks."""
    reward_module: str = ""
    """The objective's rewards written in Python: FILE.py:ClassName (several: separated by commas)."""
    prompts: str = ""
    """A data file or folder (.txt, .jsonl, .json, hub:NAME); default: the task's data."""
    split: str = "eval"
    """train, eval or all (eval: never seen in training)."""
    limit: int = 64
    """Prompts to evaluate (0: all)."""
    samples_per_prompt: int = 4
    """K samples per prompt."""
    adapter: str = ""
    """A saved adapter directory (default: none, tailored = base)."""
    batch_size: int = 8
    """Prompts decoded together."""
    toxicity_backend: str = "auto"
    """auto, detoxify or profanity_check."""
    examples: int = 3
    """Sample continuations to show."""
    write_card: bool = False
    """Store the base and tailored metrics in the adapter's card (its 'evaluation' field)."""
    alphas: str = ""
    """An alpha sweep: comma-separated strengths (e.g. 0,0.25,0.5,1,1.5,2,3) at which to decode the tailored column too."""

    def __post_init__(self):
        for name, low in (("limit", 0), ("samples_per_prompt", 1), ("batch_size", 1), ("examples", 0)):
            setattr(self, name, check_number(getattr(self, name), name, low, None, whole=True, error=DecodeError))
        if self.alphas:
            parse_alphas(self.alphas)
            if not self.adapter:
                raise DecodeError("--alphas needs --adapter DIR: without an adapter every alpha decodes the base.")


def parse_alphas(text: str, limits: tuple = DecodeConfig.LIMITS["alpha"], name: str = "--alphas") -> list[float]:
    """The strengths of an alpha sweep, from "0,0.25,1", each checked against limits (DecodeConfig.alpha's; the
    page passes its narrower range); name: what the messages call the list.

    >>> parse_alphas("0, 0.5,1")
    [0.0, 0.5, 1.0]
    """
    low, high, _ = limits
    alphas = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise DecodeError(f"{name} takes numbers separated by commas (e.g. 0,0.5,1), got {item.strip()!r}.") from None
        alphas.append(check_number(value, "alphas", low, high, error=DecodeError))
    return alphas


EVAL_DECODE_FLAGS = ("max_new_tokens", "temperature", "top_p", "alpha", "seed")
"""Decoding settings an evaluation may change; the rest are the task's (ipa.tasks.Task.decode, ipa.decoding.run.DecodeConfig.for_task)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipa evaluate", description=__doc__.split("\n\n")[0])
    add_dataclass_args(parser, EvalConfig)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_dataclass_args(parser, ModelConfig, exclude=ModelConfig.TRAINING_ONLY)
    # None = not given: the task's decoding default (alpha: the adapter card's; seed: 0).
    excluded = tuple(f.name for f in dataclasses.fields(DecodeConfig) if f.name not in EVAL_DECODE_FLAGS)
    add_dataclass_args(parser, DecodeConfig, exclude=excluded, defaults={name: None for name in EVAL_DECODE_FLAGS})
    add_api_args(parser)
    return parser


def column_metrics(task_name: str, scorer: TaskScorer, inputs: list[dict], completions: list[Completion],
                   k: int) -> dict:
    """The metrics of one column (ipa.tasks.metrics.column_metrics), with every model-based extra: toxicity,
    relevance and standalone perplexity. completions are ordered prompt by prompt, k samples each."""
    task = scorer.task
    per_sample = [x for x in inputs for _ in range(k)]
    texts = [c.text for c in completions]
    return metrics.column_metrics(
        task_name, inputs, completions, scorer(per_sample, texts), k,
        part_prefix=metrics.OBJECTIVE_PARTS if isinstance(scorer, ObjectiveScorer) else "",
        toxicity=scorer.kit.toxicity.toxicity(texts),
        relevance=scorer.kit.relevance.cosines([task.source_text(x) for x in per_sample], texts),
        standalone_perplexity=scorer.kit.fluency.perplexities(texts),
    )


def metrics_with_intervals(task_name: str, scorer: TaskScorer, inputs: list[dict], completions: list[Completion],
                           k: int) -> dict:
    """column_metrics and the 95 % half-widths over prompts of perplexity, distinct-2, KL per token and relevance
    (ipa.tasks.metrics.column_intervals), for reports that draw intervals: the alpha sweep and ipa.evaluation.compare."""
    texts = [c.text for c in completions]
    sources = [scorer.task.source_text(x) for x in inputs for _ in range(k)]
    # column_metrics computes the same cosines for its mean; MiniLM is fast next to decoding, and computing them
    # again leaves that function, shared with the card evaluation, as it is.
    relevance = scorer.kit.relevance.cosines(sources, texts)
    return {**column_metrics(task_name, scorer, inputs, completions, k), **metrics.column_intervals(completions, k, relevance=relevance)}


def alpha_sweep(policy: TailoredPolicy, prompts: list[str], config: DecodeConfig, k: int, alphas: list[float],
                batch_size: int, measure, log=lambda message: None, trained_alpha: float = 1.0,
                drive: Callable[[DecodeRun], Iterable] = run_steps) -> list[dict]:
    """The tailored column decoded at each alpha (decode_all, as the evaluation decodes it) and measured:
    [{"alpha", "trained_strength", **measure(completions)}], with measure(completions) -> metrics dict; drive: how
    each run is decoded (decode_all).

    Every alpha decodes with the same seed, so the samples of all alphas share their random numbers: the curve
    moves with alpha, not with the draw, and alpha 0 gives the base column's texts. Exactly so in float32; in
    bfloat16 a row's logits round differently with the batch it sits in (the base column alone, or beside the
    tailored one), so a few samples part ways: measured on sentiment, 16 prompts × 2, base reward 0.425 side by side,
    0.484 at alpha 0.
    """
    points = []
    for alpha in alphas:
        log(f"alpha {alpha:g}")
        completions = decode_all(policy, prompts, dataclasses.replace(config, alpha=alpha), k, batch_size, ("tailored",), log,
                                 drive)["tailored"]
        points.append({"alpha": alpha, "trained_strength": alpha == trained_alpha, **measure(completions)})
    return points


def untrained_control(policy: TailoredPolicy) -> TailoredPolicy:
    """A fresh adapter (LoRA B = 0) beside the trained one, in the same combination: what the method does
    before any training."""
    card = policy.adapter.cards[policy.adapter_name]
    if UNTRAINED not in policy.adapter.cards:
        policy.adapter.new_adapter(UNTRAINED, AdapterCard(task=card.task, combination=card.combination, lora_r=card.lora_r,
                                                          lora_alpha=card.lora_alpha, n_reward_tokens=card.n_reward_tokens))
    return TailoredPolicy(policy.base, policy.adapter, UNTRAINED, card.combination, remote_base=policy.remote_base)


def decode_all(policy, prompts, config, k, batch_size, columns, log,
               drive: Callable[[DecodeRun], Iterable] = run_steps) -> dict[str, list[Completion]]:
    """Every prompt's k samples per column, decoded batch_size prompts at a time (the batch's seed: config's + its
    number). drive(run) decodes a run to its end: alone by default; the page passes its scheduler's."""
    out = {c: [] for c in columns}
    for b, start in enumerate(range(0, len(prompts), batch_size)):
        batch_config = dataclasses.replace(config, seed=config.seed + b)
        run = DecodeRun(policy, prompts[start:start + batch_size], batch_config, n=k, columns=columns)
        for _ in drive(run):
            pass
        result = run.result(final=True)
        for column in columns:
            out[column] += getattr(result, column)
        log(f"  decoded {min(start + batch_size, len(prompts))}/{len(prompts)} prompts ({'+'.join(columns)})")
    return out


def evaluate(args: argparse.Namespace, log=lambda message: None) -> dict:
    what = dataclass_from_args(EvalConfig, args)
    card = read_card(what.adapter) if what.adapter else None
    target = scoring_target(what.task or None, what.objective or None, what.reward_module, card, what.prompts or None)
    task = target.task
    inputs = target.inputs(what.split, what.limit or None)
    given = {name: getattr(args, name) for name in EVAL_DECODE_FLAGS if getattr(args, name, None) is not None}
    given.setdefault("alpha", card.alpha if card else 1.0)
    given.setdefault("seed", 0)
    config = DecodeConfig.for_task(task, **given)
    api_config = api_config_from_args(args)  # bad API flags fail before any model loads
    models = dataclass_from_args(ModelConfig, args)
    policy = models.load_policy(what.adapter or None)
    device = policy.base.base_model.device
    if api_config:
        policy = with_api_base(policy, api_config, config.stop_at_eos)
    scorer = target.scorer(str(device), what.toxicity_backend)
    prompts = [task.build_prompt(x, policy.tokenizer) for x in inputs]
    k = what.samples_per_prompt
    start = time.time()
    log(f"{target.name}: {len(inputs)} prompts × {k} samples, {'adapter ' + what.adapter if card else 'no adapter'}")
    # Without an adapter the tailored column equals the base column: decode it once.
    columns = ("base", "tailored") if card else ("base",)
    decoded = decode_all(policy, prompts, config, k, what.batch_size, columns, log)
    decoded.setdefault("tailored", decoded["base"])
    if card and card.combination == "paper":
        decoded["untrained"] = decode_all(untrained_control(policy), prompts, config, k, what.batch_size, ("tailored",), log)["tailored"]
    report = {
        "task": target.card_task,
        "objective": target.objective.to_dict() if target.objective else None,
        "n_prompts": len(inputs),
        "samples_per_prompt": k,
        "toxicity_backend": scorer.toxicity_backend,
        "toxicity_backend_label": scorer.toxicity_backend_label,
        "prompt_format": task.prompt_format,
        "adapter": what.adapter or None,
        "models": policy.sizes,
        "combination": card.combination if card else None,
        "alpha": config.alpha,
        "seed": config.seed,
        "split": what.split,
        "prompts": what.prompts or None,
        "decode": {name: getattr(config, name) for name in EVAL_DECODE_FLAGS},
        "device": str(device),
        "dtype": str(policy.base.base_model.dtype).removeprefix("torch."),
    }
    for column, completions in decoded.items():
        report[column] = column_metrics(target.card_task, scorer, inputs, completions, k)
    if what.alphas:
        report["alpha_sweep"] = alpha_sweep(
            policy, prompts, config, k, parse_alphas(what.alphas), what.batch_size,
            lambda completions: metrics_with_intervals(target.card_task, scorer, inputs, completions, k), log, card.alpha)
    report["examples"] = [
        {"input": inputs[i // k], **{column: decoded[column][i].text for column in decoded}}
        for i in range(0, min(len(inputs), what.examples) * k, k)
    ]
    report["seconds"] = round(time.time() - start, 1)
    if policy.remote_base is not None:
        api = policy.remote_base
        report["base_api"] = {"url": api.config.url, "model": api.config.model, "top_logprobs": api.config.top_logprobs,
                              **api.stats.as_dict(), "warnings": api.warnings}
    return report


def _format(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def print_table(report: dict) -> None:
    columns = [c for c in ("base", "tailored", "untrained") if c in report]
    backend = report["toxicity_backend_label"]
    what = f"objective {report['objective']['name']}" if report.get("objective") else f"task {report['task']}"
    print(f"{what}: {report['n_prompts']} prompts × {report['samples_per_prompt']} samples, "
          f"adapter {report['adapter'] or 'none'} ({report['models']}; alpha {report['alpha']:g}), seed {report['seed']}, "
          f"{report['seconds']} s\ntoxicity: {backend}\n")
    if report.get("base_api"):
        print(cost_line(report["base_api"]) + "\n")
    print(f"{'metric':24}" + "".join(f"{c:>12}" for c in columns))
    for metric in report["base"]:
        print(f"{metric:24}" + "".join(f"{_format(report[c].get(metric)):>12}" for c in columns))
    for example in report["examples"]:
        print("\ninput: " + "; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in example["input"].items())[:300])
        for c in columns:
            print(f"  {c:9} {example[c].strip()[:200]!r}")


SWEEP_COLUMNS = ("mean_reward", "kl_per_token", "perplexity", "relevance", "distinct_2")
"""The alpha sweep's table: each metric with its 95 % half-width."""


def print_sweep(report: dict) -> None:
    """The alpha sweep as a table: one row per alpha, each metric ± its 95 % half-width over prompts."""
    print(f"\nalpha sweep ({report['n_prompts']} prompts × {report['samples_per_prompt']} samples; ± 95 % interval over prompts; "
          "* the adapter's trained strength)")
    print(f"{'alpha':>7}  " + "".join(f"{name:>20}" for name in SWEEP_COLUMNS))
    for point in report["alpha_sweep"]:
        cells = []
        for name in SWEEP_COLUMNS:
            half = point.get("mean_reward_ci95" if name == "mean_reward" else f"{name}_ci95")
            cells.append(f"{_format(point.get(name))} ± {_format(half)}")
        print(f"{point['alpha']:>6g}{'*' if point['trained_strength'] else ' '}  " + "".join(f"{cell:>20}" for cell in cells))


CARD_FIELDS = ("task", "adapter", "alpha", "n_prompts", "samples_per_prompt", "seed", "split", "prompts", "decode",
               "toxicity_backend", "device", "dtype", "base_api", "seconds", "command", "date", "base", "tailored")
"""What --write-card keeps of the report (not the examples, nor the untrained control)."""


def write_card(report: dict) -> None:
    """Store the report's base and tailored columns, and how they were measured, in the adapter's card."""
    evaluation = {key: report[key] for key in CARD_FIELDS if key in report}
    evaluation["definitions"] = "ipa.tasks.metrics"
    update_card(report["adapter"], evaluation=evaluation)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        if args.write_card and not args.adapter:
            raise AdapterError("--write-card needs --adapter DIR: the card to write is that adapter's.")
        report = evaluate(args, log=lambda message: print(message, file=sys.stderr, flush=True))
        report["command"] = "ipa evaluate " + shlex.join(argv)
        report["date"] = time.strftime("%Y-%m-%d", time.gmtime())
        if args.write_card:
            write_card(report)
    except UserError as err:
        exit_with_user_error(str(err))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
        if "alpha_sweep" in report:
            print_sweep(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
