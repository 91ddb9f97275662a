"""The `ipa` command: everything the project does from one command line (installed with the project: `make`, or
`pip install -e .`). Each subcommand is a module's own command line, its flags derived from the config dataclasses.

    ipa generate --task toxicity --adapter adapters/trained/toxicity --text "The fans yelled"
    ipa train --task sentiment --minutes 3
    ipa evaluate --task sentiment --adapter adapters/trained/sentiment --limit 64
    ipa serve                              # the web playground (as `python app.py`)
    ipa bench decode                       # a benchmark script of bench/ (as `python -m bench.decode`)
    ipa train --help                       # a subcommand's flags

`python -m` still works for every module (python -m ipa.training.loop, python -m bench.serve, ...).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "generate": ("ipa.commands.generate", "base | base + adapter side by side on your inputs, scored"),
    "train": ("ipa.training.loop", "train an adapter for a task or your own objective (RL: pg or Quark)"),
    "evaluate": ("ipa.evaluation.evaluate", "an adapter on held-back prompts with the paper's metrics; alpha sweeps"),
    "compare": ("ipa.evaluation.compare", "IPA against the base, best-of-N and prompting, at equal decoding compute"),
    "compose": ("ipa.evaluation.compose", "composed adapters against each alone"),
    "serve": ("app.main", "the web playground (Gradio; --mcp for an MCP server too)"),
    "prepare": ("ipa.models", "build the embedded model's cache now (about 20 s, once)"),
    "bench": ("bench", "a benchmark script: ipa bench decode | serve | train | rewards | train_all | ..."),
}
"""Subcommand -> (the module whose main(argv) runs it, one line of help). Named here, imported when run: the
command line sits on top of every layer (the page and the benchmarks included)."""


def usage() -> str:
    lines = ["usage: ipa COMMAND [flags]  (ipa COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:<10}{help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"ipa: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = COMMANDS[command][0]
    if command == "bench":
        if not rest or rest[0].startswith("-"):
            print("usage: ipa bench NAME [flags]  (NAME: decode, serve, train, rewards, train_all, light_adapter, prompt_formats, "
                  "profile_decode)", file=sys.stderr)
            return 2
        command = f"bench {rest[0]}"
        module, rest = f"bench.{rest[0]}", rest[1:]
    sys.argv = [f"ipa {command}", *rest]  # each module's argparse reads sys.argv where it takes no argv
    result = importlib.import_module(module).main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
