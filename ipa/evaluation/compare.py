"""IPA against its baselines at equal decoding compute (issue 14) and against fine-tuning (issue 26): six methods on the
same prompts.

    ipa compare --task sentiment --limit 16 --samples-per-prompt 2
    ipa compare --task toxicity --adapter adapters/trained/toxicity --prompts my_prompts.txt --split all --json

    method        what decodes
    base          the base model alone
    ipa           base + adapter: tailored decoding at the adapter's alpha (without --adapter: adapters/trained/TASK)
    best_of_n     N samples of the base for every sample kept, the best of each N by the task's reward
    prompted      the base, told the task's goal (ipa.tasks.Task.instruction) in its prompt
    prompted_ipa  both: the told prompt, decoded with the adapter
    adapter_alone the adapter's own model decoded alone, without the base: the fine-tuned model. For a light adapter
                  (ipa.models.light_model_dir) the small tuned model the paper compares against; for an adapter on
                  the base's own weights under the residual combination it is the LoRA-tuned base, and the identity
                  log_softmax(base) + 1 · (tuned − base) = log_softmax(tuned) makes ipa at alpha 1 that very model:
                  the report's "identity" says so, with the share of samples the two methods wrote alike

Compute. At every decoding step a stream needs one next-token distribution from each of its rows: one row for the
base, and for the tailored policy the base's plus one per adapter (plus the adapter's initial model's where that is
another model). The shipped adapters sit on the base, so IPA costs 2 rows a token. N is IPA's decode rows over the
base method's, rounded: N base samples then cost what one IPA sample costs, lengths included (2 where the adapter
keeps the base's lengths; more where IPA writes longer texts than the base, as on commongen). Where the adapter sits on the
base, the same model runs every row, so rows cost alike (an adapter row's LoRA matrices add about 2 %: 2.4M
parameters to 135M); a light adapter's rows run its first layers only (`adapter_model` names the adapter's model and
its size). adapter_alone decodes the adapter's model as both rows of a residual policy on itself (its initial
model's row, and the adapter's): its perplexity and KL per token are measured against the base, as for every other
method (on the base, that model is the base, so the run measures them; a light adapter's texts are scored by the base
afterwards, `against_base`). Each method
reports `rows_per_step`, `decode_rows` (Σ rows × generated tokens), `prefill_rows` (Σ rows × prompt tokens: the told
prompt is longer), `samples_decoded` and `seconds` (decoding; best_of_n also the reward calls that choose, reported
as `select_seconds`). The metrics' own scoring is not counted. Seconds on a shared CPU are noisy; rows are exact.

Metrics, for each method, as ipa.tasks.metrics defines them (ipa.evaluation.evaluate.metrics_with_intervals): mean_reward with its
95 % interval over prompts, perplexity (given the method's own prompt: the told prompt changes the condition;
standalone_perplexity does not), relevance, distinct_2, kl_per_token, each with its interval, the reward's parts
and the task's rates. Every method decodes with the same seed. --json prints one object
{"task", "n_prompts", "samples_per_prompt", "best_of_n", "methods": {name: {metric: value}}, ...}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from ipa.errors import UserError, check_number
from ipa.args import add_dataclass_args, dataclass_from_args, exit_with_user_error
from ipa.loading import ModelConfig
from ipa.models import logits_at, model_label
from ipa.policy_adapter import AdapterError, read_card
from ipa.decoding.run import Completion, DecodeConfig, DecodeError, DecodeRun, TailoredPolicy
from ipa.decoding.engine import run_steps
from ipa.evaluation.evaluate import EVAL_DECODE_FLAGS, EvalConfig, _format, metrics_with_intervals
from ipa.tasks import Task, get_task
from ipa.tasks.data import load_inputs
from ipa.tasks.scoring import load_scorer

METHODS = ("base", "ipa", "best_of_n", "prompted", "prompted_ipa", "adapter_alone")
SHIPPED = "adapters/trained"
"""The shipped adapters, one folder a task, in the repository: --adapter's default."""
REPO = Path(__file__).resolve().parents[2]


@dataclass
class CompareConfig:
    """How the baselines are set."""

    best_of_n: int = 0
    """N of best_of_n: base samples drawn for each sample kept (0: IPA's decoding compute over the base's, rounded)."""

    def __post_init__(self):
        self.best_of_n = check_number(self.best_of_n, "best_of_n", 0, None, whole=True, error=DecodeError)


@dataclass
class Decoded:
    """One method's samples and the compute they took."""

    completions: list[Completion]
    """k per prompt, prompt by prompt."""
    rows_per_step: int
    """Model rows a stream needs per generated token."""
    decode_rows: int
    """Σ over streams of rows_per_step × generated tokens: the next-token distributions computed."""
    prefill_rows: int
    """Σ over streams of rows_per_step × prompt tokens."""
    seconds: float
    samples_decoded: int


def decode_method(policy: TailoredPolicy, prompts: list[str], config: DecodeConfig, n: int, column: str,
                  batch_size: int, drive: Callable[[DecodeRun], Iterable] = run_steps) -> Decoded:
    """n samples of each prompt from one column ('base' or 'tailored'), batch_size prompts at a time with the
    seed + batch number (as ipa.evaluation.evaluate.decode_all, so base and ipa share their random numbers), and the rows
    the run used: its row kinds (DecodeRun.row_kinds: 'base', 'adapter', 'init', ...) are a stream's rows per step.

    drive(run) decodes a run to its end: alone by default (tailored_decoding.run_steps); the page passes its
    scheduler's, so that a comparison's rows share each step with other users' requests."""
    completions, decode_rows, prefill_rows, rows = [], 0, 0, 0
    start = time.perf_counter()
    for b, first in enumerate(range(0, len(prompts), batch_size)):
        run = DecodeRun(policy, prompts[first:first + batch_size], dataclasses.replace(config, seed=config.seed + b),
                        n=n, columns=(column,))
        for _ in drive(run):
            pass
        batch = getattr(run.result(final=True), column)
        rows = len(run.row_kinds)
        decode_rows += rows * sum(len(c.token_ids) for c in batch)
        prefill_rows += rows * sum(len(ids) for ids in run.stream_prompts)
        completions += batch
    return Decoded(completions, rows, decode_rows, prefill_rows, time.perf_counter() - start, len(completions))


def adapter_alone(policy: TailoredPolicy) -> TailoredPolicy:
    """The adapter's own model alone, as a policy: its initial model as the base of a residual policy, so that at
    alpha 1 the tailored column samples log_softmax(init) + (adapter − init), the adapter model's own distribution."""
    return TailoredPolicy(policy.adapter, policy.adapter, policy.adapter_name, "residual")


@torch.inference_mode()
def against_base(policy: TailoredPolicy, completions: list[Completion], prompts: list[str]) -> list[Completion]:
    """adapter_alone's completions measured against the base, as every other method is: each token's log-probability
    under the base (base_logprobs, behind perplexity) and KL(adapter alone ‖ base) at each step (kl). prompts: each
    completion's prompt. Needed where the adapter sits on another model (a light one); on the base, the alone run's
    base rows are the base's own and its completions carry these numbers already."""
    base, host, name = policy.base, policy.adapter, policy.adapter_name
    out = []
    for c, text in zip(completions, prompts, strict=True):
        prompt = base.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + c.token_ids], device=base.base_model.device)
        positions = slice(len(prompt) - 1, ids.shape[1] - 1)
        with base.base_only() as model:
            base_lp = torch.log_softmax(logits_at(model, model.get_decoder()(input_ids=ids).last_hidden_state,
                                                  positions).float(), -1)[0]
        prefix = host.reward_token_embedding(name)
        with host.only(name) as model:
            embeds = model.get_input_embeddings()(ids.to(host.base_model.device))
            if prefix is not None:
                embeds = torch.cat([prefix.to(embeds.dtype).view(1, 1, -1), embeds], dim=1)
            hidden = model.get_decoder()(inputs_embeds=embeds).last_hidden_state[:, int(prefix is not None):]
            alone_lp = torch.log_softmax(logits_at(model, hidden, positions).float(), -1)[0].to(base_lp.device)
        chosen = torch.tensor(c.token_ids, device=base_lp.device).unsqueeze(-1)
        kl = (alone_lp.exp() * (alone_lp - base_lp)).nan_to_num(0.0).sum(-1)
        out.append(dataclasses.replace(c, base_logprobs=base_lp.gather(-1, chosen).squeeze(-1).tolist(), kl=kl.tolist()))
    return out


def best_of_n(rewards: list[float], k: int, n: int) -> list[int]:
    """Indices of the kept samples: each prompt's k·n rewards (prompt by prompt) cut into k groups of n, the highest of
    each group kept (the first of equals).

    >>> best_of_n([0.1, 0.7, 0.4, 0.2,   0.9, 0.3, 0.5, 0.5], k=2, n=2)    # 2 prompts × 2 kept, each the best of 2
    [1, 2, 4, 6]
    """
    if n < 1 or len(rewards) % n:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of n = {n}.")
    return [g + max(range(n), key=lambda j: rewards[g + j]) for g in range(0, len(rewards), n)]


def compare_methods(policy: TailoredPolicy, task: Task, inputs: list[dict], config: DecodeConfig, k: int, batch_size: int,
                    reward: Callable[[list[dict], list[str]], list[float]], measure: Callable[[list[Completion]], dict],
                    n: int = 0, log=lambda message: None, warm_up: bool = True,
                    drive: Callable[[DecodeRun], Iterable] = run_steps,
                    alone_drive: Callable[[DecodeRun], Iterable] | None = None) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """Every method's metrics and compute, {method: {metric: value}} in METHODS' order, and its texts (k per input).

    reward(inputs, texts) -> the task's reward per sample (best_of_n's choice); measure(completions) -> the metrics
    of a column of k samples per input; n: best_of_n's N (0: IPA's decode rows / the base's, rounded, at least 1);
    warm_up: decode and score once, untimed, first (a server whose models are warm passes False); drive: how each
    run is decoded (decode_method); alone_drive: how adapter_alone's runs are (default: drive where the adapter sits on
    the base, whose engine then serves them too, else each alone: its base is the adapter's model)."""
    if policy.adapter is None:
        raise AdapterError("ipa.evaluation.compare needs an adapter: ipa and prompted_ipa decode with it.")
    plain = [task.build_prompt(x, policy.tokenizer) for x in inputs]
    told = [task.build_prompt(x, policy.tokenizer, instructed=True) for x in inputs]
    if warm_up:
        # Not timed: the first decoding step and the reward's models (loaded on first use) would be charged
        # to whichever method came first.
        decode_method(policy, plain[:1], dataclasses.replace(config, max_new_tokens=2), 1, "tailored", 1, drive)
        reward(inputs[:1], ["A warm-up sentence."])
    runs = {}
    for name, prompts, column in (("base", plain, "base"), ("ipa", plain, "tailored")):
        log(f"{name}: {len(prompts)} prompts × {k}")
        runs[name] = decode_method(policy, prompts, config, k, column, batch_size, drive)
    n = n or max(1, round(runs["ipa"].decode_rows / runs["base"].decode_rows))
    log(f"best_of_n: {len(plain)} prompts × {k} × N = {n}")
    drawn = decode_method(policy, plain, config, k * n, "base", batch_size, drive)
    start = time.perf_counter()
    rewards = reward([x for x in inputs for _ in range(k * n)], [c.text for c in drawn.completions])
    kept = [drawn.completions[i] for i in best_of_n(rewards, k, n)]
    select_seconds = time.perf_counter() - start
    runs["best_of_n"] = dataclasses.replace(drawn, completions=kept, seconds=drawn.seconds + select_seconds)
    for name, column in (("prompted", "base"), ("prompted_ipa", "tailored")):
        log(f"{name}: {len(told)} prompts × {k}")
        runs[name] = decode_method(policy, told, config, k, column, batch_size, drive)
    log(f"adapter_alone: {len(plain)} prompts × {k}")
    alone_drive = alone_drive or (drive if policy.adapter is policy.base else run_steps)
    alone = decode_method(adapter_alone(policy), plain, dataclasses.replace(config, alpha=1.0), k, "tailored", batch_size,
                          alone_drive)
    if policy.adapter is not policy.base:  # on the base, the alone run's base rows are the base: measured already
        each = [prompt for prompt in plain for _ in range(k)]  # completions are k per prompt, prompt by prompt
        alone = dataclasses.replace(alone, completions=against_base(policy, alone.completions, each))
    runs["adapter_alone"] = alone
    methods = {}
    for name in METHODS:
        run = runs[name]
        log(f"scoring {name}")
        methods[name] = {
            **measure(run.completions),
            "seconds": round(run.seconds, 2),
            "rows_per_step": run.rows_per_step,
            "decode_rows": run.decode_rows,
            "prefill_rows": run.prefill_rows,
            "decode_rows_vs_ipa": run.decode_rows / runs["ipa"].decode_rows if runs["ipa"].decode_rows else None,
            "samples_decoded": run.samples_decoded,
        }
    methods["best_of_n"].update(n=n, select_seconds=round(select_seconds, 2))
    if policy.shares_weights and policy.combination == "residual":  # the identity: ipa at alpha 1 is the tuned model
        same = [a.token_ids == b.token_ids for a, b in zip(runs["ipa"].completions, runs["adapter_alone"].completions)]
        methods["adapter_alone"]["same_texts_as_ipa"] = sum(same) / len(same) if config.alpha == 1 else None
    return methods, {name: [c.text for c in run.completions] for name, run in runs.items()}


# --- command line ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipa compare", description=__doc__.split("\n\n")[0])
    add_dataclass_args(parser, EvalConfig, exclude=("write_card", "alphas"))
    add_dataclass_args(parser, CompareConfig)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_dataclass_args(parser, ModelConfig, exclude=ModelConfig.TRAINING_ONLY)
    excluded = tuple(f.name for f in dataclasses.fields(DecodeConfig) if f.name not in EVAL_DECODE_FLAGS)
    add_dataclass_args(parser, DecodeConfig, exclude=excluded, defaults={name: None for name in EVAL_DECODE_FLAGS})
    for action in parser._actions:  # EvalConfig's help says "default: none"; here it is the task's shipped adapter
        if action.dest == "adapter":
            action.help = "A saved adapter directory (default: adapters/trained/TASK, the task's shipped adapter)."
    return parser


def compare(args: argparse.Namespace, log=lambda message: None) -> dict:
    what = dataclass_from_args(EvalConfig, args)
    baselines = dataclass_from_args(CompareConfig, args)
    task = get_task(what.task)
    adapter = what.adapter or f"{SHIPPED}/{task.name}"
    card = read_card(what.adapter or REPO / adapter)
    inputs = load_inputs(task.name, what.prompts or None, what.split, what.limit or None)
    given = {name: getattr(args, name) for name in EVAL_DECODE_FLAGS if getattr(args, name, None) is not None}
    config = DecodeConfig.for_task(task, **{"alpha": card.alpha, "seed": 0, **given})
    policy = dataclass_from_args(ModelConfig, args).load_policy(what.adapter or REPO / adapter)
    device = policy.base.base_model.device
    scorer = load_scorer(task.name, device=str(device), toxicity_backend=what.toxicity_backend)
    k = what.samples_per_prompt
    start = time.time()
    log(f"{task.name}: {len(inputs)} prompts × {k} samples, adapter {adapter} (alpha {config.alpha:g})")
    methods, texts = compare_methods(
        policy, task, inputs, config, k, what.batch_size,
        reward=lambda xs, texts: [s["reward"] for s in scorer(xs, texts)],
        measure=lambda completions: metrics_with_intervals(task.name, scorer, inputs, completions, k),
        n=baselines.best_of_n, log=log)
    return compare_report(task, inputs, k, config, adapter, methods, texts, scorer, policy, time.time() - start,
                          what.examples, split=what.split, prompts=what.prompts or None)


def compare_report(task: Task, inputs: list[dict], k: int, config: DecodeConfig, adapter: str, methods: dict,
                   texts: dict[str, list[str]], scorer, policy: TailoredPolicy, seconds: float, examples: int,
                   **where) -> dict:
    """compare_methods' results as one JSON-able object: what --json prints, and the page's comparison (its JSON
    download). where: how the inputs were chosen (the CLI: split and prompts file)."""
    return {
        "task": task.name,
        "n_prompts": len(inputs),
        "samples_per_prompt": k,
        "best_of_n": methods["best_of_n"]["n"],
        "methods": methods,
        "adapter": adapter,
        "adapter_model": f"{model_label(policy.adapter.model_name)}: {policy.sizes}",
        "alpha": config.alpha,
        "instruction": task.instruction,
        "seed": config.seed,
        **where,
        "decode": {name: getattr(config, name) for name in EVAL_DECODE_FLAGS},
        "toxicity_backend": scorer.toxicity_backend,
        "toxicity_backend_label": scorer.toxicity_backend_label,
        "device": str(policy.base.base_model.device),
        "dtype": str(policy.base.base_model.dtype).removeprefix("torch."),
        "seconds": round(seconds, 1),
        "examples": [{"input": inputs[i], **{name: texts[name][i * k] for name in METHODS}}
                     for i in range(min(len(inputs), examples))],
    }


TABLE = ("mean_reward", "perplexity", "standalone_perplexity", "relevance", "distinct_2", "kl_per_token")
"""The table's metrics, each with its 95 % half-width where it has one; the task's own metrics follow."""
COMPUTE = ("mean_tokens", "decode_rows", "prefill_rows", "samples_decoded", "seconds")
"""The table's last rows."""
LEFT_OUT = ("distinct_3", "rows_per_step", "decode_rows_vs_ipa", "n", "select_seconds", "same_texts_as_ipa")
"""In the JSON, not in the table."""


def print_table(report: dict) -> None:
    methods = report["methods"]
    print(f"task {report['task']}: {report['n_prompts']} prompts × {report['samples_per_prompt']} samples, adapter "
          f"{report['adapter']} ({report['adapter_model']}; alpha {report['alpha']:g}), best_of_n N = {report['best_of_n']}, seed {report['seed']}, "
          f"{report['seconds']} s\ninstruction (prompted): {report['instruction']!r}\ntoxicity: {report['toxicity_backend_label']}\n")
    same = methods.get("adapter_alone", {}).get("same_texts_as_ipa")
    if same is not None:
        print(f"identity: the adapter sits on the base (residual), so ipa at alpha 1 samples the LoRA-tuned model itself "
              f"(adapter_alone): {100 * same:.0f} % of the samples are the same text\n")
    print(f"{'metric':22}" + "".join(f"{name:>18}" for name in methods))
    own = [m for m in methods["base"] if m not in (*TABLE, *COMPUTE, *LEFT_OUT) and not m.endswith("_ci95")]
    for metric in (*TABLE, *own, *COMPUTE):
        cells = []
        for values in methods.values():
            half = values.get("mean_reward_ci95" if metric == "mean_reward" else f"{metric}_ci95")
            value = values.get(metric)
            cell = str(value) if isinstance(value, int) else _format(value)
            cells.append(f"{cell + (f' ± {_format(half)}' if half is not None else ''):>18}")
        print(f"{metric:22}" + "".join(cells))
    print_examples(report["examples"], list(methods), 15)


def print_examples(examples: list[dict], columns: list[str], width: int) -> None:
    """Each example's input, then each column's text (ipa.evaluation.compare's methods, ipa.evaluation.compose's columns)."""
    for example in examples:
        print("\ninput: " + "; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in example["input"].items())[:300])
        for name in columns:
            print(f"  {name:{width - 2}} {example[name].strip()[:200]!r}")


def run_report(command: str, parser: argparse.ArgumentParser, build, table, argv: list[str] | None) -> int:
    """A report command's main: parse, build the report (progress on stderr; a user error is one line and exit 2),
    stamp it with the command and date, print it as JSON (--json) or as a table."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    try:
        report = build(args, log=lambda message: print(message, file=sys.stderr, flush=True))
    except UserError as err:
        exit_with_user_error(str(err))
    report["command"] = f"{command} " + shlex.join(argv)
    report["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        table(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_report("ipa compare", build_parser(), compare, print_table, argv)


if __name__ == "__main__":
    sys.exit(main())
