"""Generate with the base model alone and with base plus a policy adapter, side by side.

    python -m adapters.generate --prompt "The movie was" --adapter adapters/trained/toxicity --n 2
    python -m adapters.generate --prompt "The movie was" --json

With --json, prints one JSON object: {"base": [N strings], "tailored": [N strings], ...}.
User errors (empty prompt, alpha out of range, a missing or corrupt adapter) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from adapters.cli import add_dataclass_args, dataclass_from_args, exit_with_user_error
from adapters.loading import load_policy
from adapters.models import EMBEDDED, ModelLoadError, resolve_device, resolve_dtype
from adapters.policy_adapter import AdapterError, read_card
from adapters.tailored_decoding import DecodeConfig, DecodeError, generate

USER_ERRORS = (DecodeError, AdapterError, ModelLoadError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m adapters.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--adapter", default=None, help="a saved adapter directory (default: none, both columns are the base)")
    parser.add_argument("--base", default=EMBEDDED, help="base model: 'embedded', a local directory or a hub id")
    parser.add_argument("--n", type=int, default=1, help="continuations per policy (default: 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 on GPU, float32 on CPU), float32 or bfloat16")
    add_dataclass_args(parser, DecodeConfig, defaults={"alpha": None})
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.n < 1:
            raise DecodeError(f"--n must be at least 1, got {args.n}.")
        card = read_card(args.adapter) if args.adapter else None
        alpha = args.alpha if args.alpha is not None else (card.alpha if card else 1.0)
        config = dataclass_from_args(DecodeConfig, args, alpha=alpha)
        if not args.prompt.strip():
            raise DecodeError("The prompt is empty: give some text to continue with --prompt.")
        device = resolve_device(args.device)
        policy = load_policy(args.base, args.adapter, device, resolve_dtype(args.dtype, device))
        result = generate(policy, [args.prompt], config, n=args.n)
    except USER_ERRORS as err:
        exit_with_user_error(str(err))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "prompt": args.prompt,
            "adapter": args.adapter,
            "alpha": config.alpha,
            "seed": result.seed,
            "base": [c.text for c in result.base],
            "tailored": [c.text for c in result.tailored],
            "warnings": result.warnings,
        }, indent=2))
        return 0
    label = f"base + adapter {args.adapter} (alpha {config.alpha:g})" if args.adapter else "tailored (no adapter: same as base)"
    print(f"prompt: {args.prompt}\n")
    for title, completions in (("base", result.base), (label, result.tailored)):
        print(f"== {title} ==")
        for i, c in enumerate(completions, 1):
            print(f"[{i}] {c.text.strip()}")
        print()
    print(f"seed {result.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
