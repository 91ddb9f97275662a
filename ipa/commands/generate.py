"""Generate with the base model alone and with base plus a policy adapter, side by side.

    ipa generate --prompt "The movie was" --adapter adapters/trained/toxicity --n 2
    ipa generate --prompt "The movie was" --json
    ipa generate --task commongen --prompt "dog frisbee catch" --n 2
    ipa generate --prompt "The harbour was quiet" --adapter runs/cheerful-ocean/adapter   # its objective
    ipa generate --prompt "The harbour was quiet" --objective objectives/cheerful-ocean.json
    ipa generate --prompt "The movie was" --base-api http://127.0.0.1:8000/v1 --base-api-model NAME
    ipa generate --prompt "The movie was" --adapter adapters/trained/toxicity --alpha 1 \
        --adapter adapters/trained/sentiment --alpha 0.5

Several --adapter flags compose the adapters (a product of experts: base × adapter_1^alpha_1 × adapter_2^alpha_2);
the i-th --alpha is the i-th adapter's strength (without --alpha, each adapter's trained one). They must steer the
same base from the same initial model.

With --task, the task builds the model's prompt from --prompt (the text to continue, the concept list or the
user's message; knowledge_dialogue also takes --knowledge), decoding defaults come from the task, and each
continuation is printed with its reward and the reward's parts. An adapter trained for an objective (its card
holds it) is scored with that objective; --objective FILE scores any generation with an objective (its blocks are
the parts; --reward-module FILE.py:Class for the blocks written in Python).

With --json, prints one JSON object: {"base": [N strings], "tailored": [N strings], "model_prompt": the text the
model was given, ...}. With --task, special-token strings typed in --prompt or --knowledge stay text (see
tasks.escape_special_tokens); without --task, --prompt goes to the model as it is, so a hand-written template works.
User errors (empty prompt, alpha out of range, a missing or corrupt adapter) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ipa.decoding.remote import add_api_args, api_config_from_args, cost_line, with_api_base
from ipa.errors import UserError, check_number
from ipa.args import add_dataclass_args, dataclass_from_args, exit_with_user_error
from ipa.loading import ModelConfig, adapter_alphas, check_composable
from ipa.decoding.run import DecodeConfig, DecodeError
from ipa.decoding.engine import generate
from ipa.tasks.objective import scoring_target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipa generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", required=True, help="the text to continue (with --task: the task's main input)")
    parser.add_argument("--task", default=None, help="build the prompt, decode and score as this task (toxicity, commongen, ...)")
    parser.add_argument("--objective", default=None, help="score (and build the prompt) with this objective's JSON file "
                        "(default: the adapter's own objective, when it was trained for one)")
    parser.add_argument("--reward-module", default="", help="the objective's rewards written in Python: FILE.py:ClassName "
                        "(several: separated by commas)")
    parser.add_argument("--knowledge", default=None, help="the knowledge passage, for --task knowledge_dialogue")
    parser.add_argument("--toxicity-backend", default="auto", help="with --task: auto, detoxify or profanity_check")
    parser.add_argument("--adapter", action="append", default=None,
                        help="a saved adapter directory (default: none, both columns are the base); repeat to compose")
    parser.add_argument("--alpha", action="append", type=float, default=None,
                        help="adapter strength, 0 = base only; one per --adapter, in order (default: the adapter's card)")
    parser.add_argument("--n", type=int, default=1, help="continuations per policy (default: 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_dataclass_args(parser, ModelConfig, exclude=ModelConfig.TRAINING_ONLY)
    # None = not given: the task's default (alpha: the adapter card's), else DecodeConfig's.
    add_dataclass_args(parser, DecodeConfig, exclude=("alpha",),
                       defaults={f.name: None for f in dataclasses.fields(DecodeConfig)})
    add_api_args(parser)
    return parser


def decode_config_from_args(args, task, alpha: float) -> DecodeConfig:
    """The flags given, over the task's decoding defaults (or DecodeConfig's); `alpha` is the first adapter's."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(DecodeConfig)
             if f.name != "alpha" and getattr(args, f.name) is not None}
    given["alpha"] = alpha
    return DecodeConfig.for_task(task, **given) if task else DecodeConfig(**given)


def score_task(target, inputs: dict, result, device: str, toxicity_backend: str) -> dict:
    """Each continuation's reward (the task's or the objective's) and its parts, for the JSON output and the text listing."""
    scorer = target.scorer(device, toxicity_backend)
    return {
        "task": target.card_task,
        "objective": target.objective.to_dict() if target.objective else None,
        "task_inputs": inputs,
        "toxicity_backend": scorer.toxicity_backend,
        "base_rewards": scorer([inputs] * len(result.base), [c.text for c in result.base]),
        "tailored_rewards": scorer([inputs] * len(result.tailored), [c.text for c in result.tailored]),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.n = check_number(args.n, "--n", 1, None, whole=True, error=DecodeError)
        adapters = args.adapter or []
        cards = check_composable(adapters) if adapters else []
        alphas = adapter_alphas(args, cards)
        card = cards[0] if cards else None  # the first adapter's objective scores the generation
        target = None
        if args.task or args.objective or (card and card.objective):
            target = scoring_target(args.task, args.objective, args.reward_module, card if card and card.objective else None)
        task = target.task if target else None
        config = decode_config_from_args(args, task, alphas[0])
        if not args.prompt.strip():
            raise DecodeError("The prompt is empty: give some text to continue with --prompt.")
        task_inputs = target.inputs_from_prompt(args.prompt, args.knowledge) if target else None
        api_config = api_config_from_args(args)  # bad API flags fail before any model loads
        models = dataclass_from_args(ModelConfig, args)
        policy = models.load_policy(adapters[0] if adapters else None, list(zip(adapters[1:], alphas[1:])))
        if api_config:
            policy = with_api_base(policy, api_config, config.stop_at_eos)
        model_prompt = task.build_prompt(task_inputs, policy.tokenizer) if task else args.prompt
        result = generate(policy, [model_prompt], config, n=args.n)
        task_json = score_task(target, task_inputs, result, str(policy.base.base_model.device), args.toxicity_backend) if target else {}
    except UserError as err:
        exit_with_user_error(str(err))
    api = policy.remote_base
    for warning in result.warnings + (api.warnings if api else []):
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "prompt": args.prompt,
            "model_prompt": model_prompt,
            "adapter": adapters[0] if adapters else None,
            "alpha": config.alpha,
            "adapters": [{"adapter": a, "alpha": alpha} for a, alpha in zip(adapters, [config.alpha] + alphas[1:])],
            "models": policy.sizes,
            "seed": result.seed,
            "base": [c.text for c in result.base],
            "tailored": [c.text for c in result.tailored],
            "warnings": result.warnings,
            **task_json,
            "base_api": {"url": api.config.url, "model": api.config.model, "top_logprobs": api.config.top_logprobs,
                         **api.stats.as_dict()} if api else None,
        }, indent=2))
        return 0
    steering = " + ".join(f"adapter {a} (alpha {alpha:g})" for a, alpha in zip(adapters, [config.alpha] + alphas[1:]))
    label = f"base + {steering}: {policy.sizes}" if adapters else "tailored (no adapter: same as base)"
    print(f"prompt: {args.prompt}\n")
    for title, key, completions in (("base", "base_rewards", result.base), (label, "tailored_rewards", result.tailored)):
        print(f"== {title} ==")
        rewards = task_json.get(key, [])
        for i, c in enumerate(completions, 1):
            print(f"[{i}] {c.text.strip()}")
            if rewards:
                parts = ", ".join(f"{name} {value:.2f}" for name, value in rewards[i - 1].items() if name != "reward")
                print(f"    reward {rewards[i - 1]['reward']:.2f} ({parts})")
        print()
    print(f"seed {result.seed}")
    if api:
        print(cost_line(api.stats.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
