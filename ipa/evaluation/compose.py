"""Composed adapters measured: the base, each adapter alone and all of them at once, scored by every adapter's reward.

    ipa compose --task toxicity --adapter adapters/trained/toxicity --alpha 1 \
        --adapter adapters/trained/sentiment --alpha 1 --limit 16 --samples-per-prompt 2 --device cpu [--json]

Decodes the task's held-back prompts (--split eval; RealToxicityPrompts for toxicity) in these columns: `base`;
each adapter alone at its alpha (named by its directory: `toxicity`, `sentiment`); and all of them composed
(`toxicity+sentiment`: base × adapter_1^alpha_1 × adapter_2^alpha_2, TailoredPolicy.more_adapters). Every column
decodes with the same seed (ipa.evaluation.compare.decode_method: the seed + the batch's number), so samples share their
random numbers: the columns differ where the adapters moved the distribution, not by the draw. The task defaults to
the first adapter's (its card's task or objective); --alpha defaults to each adapter's card.

Each column is scored by every reward at hand: the task's and each adapter's (its card's task or objective; the
task's inputs read as that task's, tasks.carry_inputs). Per reward: mean_reward ± its 95 % interval over prompts,
the reward's parts and the task's rates (positive_rate, ...), from ipa.tasks.metrics.column_metrics. Per column, as
ipa.evaluation.evaluate.metrics_with_intervals measures them: avg_max_toxicity and toxicity_probability (the toxicity
classifier), perplexity (given the prompt), standalone_perplexity, relevance, distinct_2, kl_per_token (KL of the
column's policy from the base), each with its interval where it has one; mean_tokens; and the decoding's
rows_per_step (1 + one per adapter), decode_rows and seconds (decoding only, after an untimed first step; the
scoring is not timed).

--json prints one object {"task", "n_prompts", "samples_per_prompt", "adapters": [{"name", "alpha", "directory"}],
"rewards": {name: what it scores}, "columns": {column: {metric: value, "rewards": {reward: {metric: value}}}}, ...}.
User errors (fewer than two adapters, a missing adapter directory, adapters that do not compose, alphas not paired
with adapters) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from ipa.args import add_dataclass_args, dataclass_from_args
from ipa.loading import ModelConfig, adapter_alphas, check_composable
from ipa.policy_adapter import AdapterError
from ipa.decoding.run import Completion, DecodeConfig, DecodeRun, TailoredPolicy
from ipa.decoding.engine import run_steps
from ipa.evaluation.compare import decode_method, print_examples, run_report
from ipa.evaluation.evaluate import EVAL_DECODE_FLAGS, EvalConfig, _format, metrics_with_intervals
from ipa.tasks import carry_inputs, metrics
from ipa.tasks.objective import scoring_target

BASE = "base"


def columns_of(policy: TailoredPolicy, alpha: float) -> dict[str, tuple[TailoredPolicy, float, str]]:
    """The columns to decode for a composed policy (its first adapter at `alpha`, DecodeConfig's): name ->
    (policy, the alpha DecodeConfig gets, DecodeRun column). For toxicity (alpha 1) composed with sentiment (0.5):

        base                (policy,          1.0, "base")       the base alone: no adapter rows
        toxicity            (toxicity alone,  1.0, "tailored")
        sentiment           (sentiment alone, 0.5, "tailored")
        toxicity+sentiment  (policy,          1.0, "tailored")   sentiment at 0.5 from policy.more_adapters
    """
    if policy.adapter is None or not policy.more_adapters:
        raise AdapterError("ipa.evaluation.compose measures composed adapters: give --adapter at least twice "
                           "(one adapter: ipa evaluate).")
    strengths = [(policy.adapter_name, alpha), *policy.more_adapters]
    if any(name == BASE for name, _ in strengths):
        raise AdapterError(f"An adapter named {BASE!r} would take the base column's name: rename its directory.")
    columns = {BASE: (policy, alpha, "base")}
    for name, strength in strengths:
        columns[name] = (dataclasses.replace(policy, adapter_name=name, more_adapters=()), strength, "tailored")
    columns["+".join(name for name, _ in strengths)] = (policy, alpha, "tailored")
    return columns


def compose_columns(policy: TailoredPolicy, prompts: list[str], config: DecodeConfig, k: int, batch_size: int,
                    measure: Callable[[list[Completion]], dict], log=lambda message: None, warm_up: bool = True,
                    drive: Callable[[DecodeRun], Iterable] = run_steps) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """Every column's metrics, {column: {**measure(completions), "seconds", "rows_per_step", "decode_rows"}} in
    columns_of's order, and its texts (k per prompt, prompt by prompt).

    policy: base + the first adapter (at config.alpha) + policy.more_adapters; measure(completions) -> the metrics
    of a column; warm_up: decode once, untimed, first (the first step would be charged to the base column); drive:
    how each run is decoded (ipa.evaluation.compare.decode_method)."""
    columns = columns_of(policy, config.alpha)
    if warm_up:
        decode_method(policy, prompts[:1], dataclasses.replace(config, max_new_tokens=2), 1, "tailored", 1, drive)
    decoded = {}
    for name, (column_policy, alpha, column) in columns.items():
        log(f"{name}: {len(prompts)} prompts × {k}")
        decoded[name] = decode_method(column_policy, prompts, dataclasses.replace(config, alpha=alpha), k, column,
                                      batch_size, drive)
    results = {}
    for name, run in decoded.items():
        log(f"scoring {name}")
        results[name] = {**measure(run.completions), "rows_per_step": run.rows_per_step, "decode_rows": run.decode_rows,
                         "seconds": round(run.seconds, 2)}
    return results, {name: [c.text for c in run.completions] for name, run in decoded.items()}


@dataclass
class Reward:
    """One reward that scores every column: a task's or an objective's scorer, with the inputs it reads."""

    task_name: str
    """What ipa.tasks.metrics.column_metrics calls the task (its rates); an objective's is 'custom' (no rates)."""
    scorer: Callable[[list[dict], list[str]], list[dict]]
    """(inputs, texts) -> [{"reward": r, part: value, ...}] (ipa.tasks.scoring.TaskScorer, ObjectiveScorer)."""
    inputs: list[dict]
    """One per prompt, as this reward's task reads them."""
    part_prefix: str = ""
    """ipa.tasks.metrics.OBJECTIVE_PARTS for an objective's blocks."""


COLUMN_METRICS = tuple(m for m in metrics.SHARED_METRICS if m not in ("mean_reward", "mean_reward_ci95"))
"""What a column reports once, whichever reward scores it (with each one's _ci95)."""


def reward_metrics(rewards: dict[str, Reward], completions: list[Completion], k: int) -> dict[str, dict]:
    """{reward: {"mean_reward", "mean_reward_ci95", part: mean, rate: share}} of one column (k samples per prompt)
    by each reward, from ipa.tasks.metrics.column_metrics; the metrics every reward shares are left to the column."""
    texts = [c.text for c in completions]
    out = {}
    for name, reward in rewards.items():
        scores = reward.scorer([x for x in reward.inputs for _ in range(k)], texts)
        values = metrics.column_metrics(reward.task_name, reward.inputs, completions, scores, k, part_prefix=reward.part_prefix)
        out[name] = {key: value for key, value in values.items() if key not in COLUMN_METRICS}
    return out


def column_part(values: dict) -> dict:
    """The metrics of a column that no reward changes (COLUMN_METRICS and their intervals)."""
    return {key: value for key, value in values.items() if key.removesuffix("_ci95") in COLUMN_METRICS}


# --- command line ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipa compose", description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", action="append", default=None,
                        help="a saved adapter directory; give it at least twice (the adapters to compose)")
    parser.add_argument("--alpha", action="append", type=float, default=None,
                        help="adapter strength, one per --adapter, in order (default: each adapter's card)")
    add_dataclass_args(parser, EvalConfig, exclude=("adapter", "objective", "reward_module", "write_card", "alphas"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_dataclass_args(parser, ModelConfig, exclude=ModelConfig.TRAINING_ONLY)
    excluded = tuple(f.name for f in dataclasses.fields(DecodeConfig) if f.name not in EVAL_DECODE_FLAGS) + ("alpha",)
    add_dataclass_args(parser, DecodeConfig, exclude=excluded, defaults={name: None for name in EVAL_DECODE_FLAGS})
    return parser


def compose(args: argparse.Namespace, log=lambda message: None) -> dict:
    what = dataclass_from_args(EvalConfig, args)
    directories = args.adapter or []
    if len(directories) < 2:
        raise AdapterError("ipa.evaluation.compose measures composed adapters: give --adapter at least twice "
                           "(one adapter: ipa evaluate).")
    cards = check_composable(directories)  # a missing, corrupt or mismatched adapter fails before any model loads
    alphas = adapter_alphas(args, cards)
    target = scoring_target(what.task or None, None, "", cards[0], what.prompts or None)
    task = target.task
    inputs = target.inputs(what.split, what.limit or None)
    given = {name: getattr(args, name) for name in EVAL_DECODE_FLAGS if getattr(args, name, None) is not None}
    config = DecodeConfig.for_task(task, **{"seed": 0, **given, "alpha": alphas[0]})
    targets = {target.name: target}
    for card in cards:
        other = scoring_target(None, None, "", card)
        targets.setdefault(other.name, other)
    carried = {name: [carry_inputs(x, task, other.task) for x in inputs] for name, other in targets.items()}
    policy = dataclass_from_args(ModelConfig, args).load_policy(directories[0], list(zip(directories[1:], alphas[1:])))
    device = str(policy.base.base_model.device)
    scorers = {name: other.scorer(device, what.toxicity_backend) for name, other in targets.items()}
    rewards = {name: Reward(other.card_task, scorers[name], carried[name],
                            metrics.OBJECTIVE_PARTS if other.objective else "") for name, other in targets.items()}
    k = what.samples_per_prompt
    main = scorers[target.name]
    prompts = [task.build_prompt(x, policy.tokenizer) for x in inputs]
    names = [policy.adapter_name] + [name for name, _ in policy.more_adapters]
    start = time.time()
    log(f"{target.name}: {len(inputs)} prompts × {k} samples, " + " + ".join(f"{n} (alpha {a:g})" for n, a in zip(names, alphas)))

    def measure(completions: list[Completion]) -> dict:
        # The column's own metrics as ipa.evaluation.evaluate measures them (its reward is scored again below, beside the others).
        column = column_part(metrics_with_intervals(target.card_task, main, inputs, completions, k))
        return {**column, "rewards": reward_metrics(rewards, completions, k)}

    columns, texts = compose_columns(policy, prompts, config, k, what.batch_size, measure, log)
    return {
        "task": target.card_task,
        "objective": target.objective.to_dict() if target.objective else None,
        "n_prompts": len(inputs),
        "samples_per_prompt": k,
        "adapters": [{"name": n, "alpha": a, "directory": d} for n, a, d in zip(names, alphas, directories)],
        "rewards": {name: other.objective.describe() if other.objective else other.task.reward for name, other in targets.items()},
        "columns": columns,
        "combination": cards[0].combination,
        "seed": config.seed,
        "split": what.split,
        "prompts": what.prompts or None,
        "decode": {name: getattr(config, name) for name in EVAL_DECODE_FLAGS if name != "alpha"},
        "toxicity_backend": main.toxicity_backend,
        "toxicity_backend_label": main.toxicity_backend_label,
        "device": device,
        "dtype": str(policy.base.base_model.dtype).removeprefix("torch."),
        "seconds": round(time.time() - start, 1),
        "examples": [{"input": inputs[i], **{name: texts[name][i * k] for name in columns}}
                     for i in range(min(len(inputs), what.examples))],
    }


LAST = ("mean_tokens", "rows_per_step", "decode_rows", "seconds")
"""The table's last rows: length and compute."""


def _cell(values: dict, metric: str) -> str:
    value, half = values.get(metric), values.get(f"{metric}_ci95")
    text = str(value) if isinstance(value, int) else _format(value)
    return text + (f" ± {_format(half)}" if half is not None else "")


def print_table(report: dict) -> None:
    columns = report["columns"]
    steering = " + ".join(f"{a['directory']} (alpha {a['alpha']:g})" for a in report["adapters"])
    print(f"task {report['task']}: {report['n_prompts']} prompts × {report['samples_per_prompt']} samples, {steering}, "
          f"seed {report['seed']}, {report['device']} {report['dtype']}, {report['seconds']} s\n"
          f"toxicity: {report['toxicity_backend_label']}; ± 95 % interval over prompts\n")
    width = max(20, *(len(name) + 2 for name in columns))
    print(f"{'metric':28}" + "".join(f"{name:>{width}}" for name in columns))
    first = next(iter(columns.values()))
    for reward in first["rewards"]:
        for metric in first["rewards"][reward]:
            if metric.endswith("_ci95"):
                continue
            label = f"{reward} reward" if metric == "mean_reward" else f"  {reward}: {metric}"
            print(f"{label:28}" + "".join(f"{_cell(values['rewards'][reward], metric):>{width}}" for values in columns.values()))
    shared = [m for m in first if m not in LAST and m != "rewards" and not m.endswith("_ci95")]
    for metric in (*shared, *LAST):
        print(f"{metric:28}" + "".join(f"{_cell(values, metric):>{width}}" for values in columns.values()))
    print_examples(report["examples"], list(columns), width)


def main(argv: list[str] | None = None) -> int:
    return run_report("ipa compose", build_parser(), compose, print_table, argv)


if __name__ == "__main__":
    sys.exit(main())
