"""Measure each task's base-model reward with a raw prompt and with the chat template.

    python -m bench.prompt_formats [--tasks commongen,toxicity] [--n-inputs 16] [--samples 2] [--save FILE]
    python -m bench.prompt_formats --rescore FILE      # score saved continuations again (rewards changed)

For every task: the first N eval inputs, K samples each from the base model alone (each task's decoding
settings, seed 0), scored by the task's scorer. Prints mean reward ± standard error and mean relevance
(MiniLM cosine of input and continuation) per format; ipa/tasks/__init__.py records the result and the pick.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from ipa.loading import load_policy
from ipa.decoding.run import DecodeConfig
from ipa.decoding.engine import generate
from ipa.tasks import PROMPT_FORMATS, TASKS
from ipa.tasks.data import load_inputs
from ipa.tasks.scoring import load_scorer


def mean_and_se(values: list[float]) -> tuple[float, float]:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return statistics.fmean(values), se


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--n-inputs", type=int, default=16)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--show", type=int, default=2, help="sample texts to print per task and format")
    parser.add_argument("--save", default=None, help="write the generated continuations to this JSON file")
    parser.add_argument("--rescore", default=None, help="score the continuations saved in this file instead of generating")
    args = parser.parse_args(argv)
    saved = json.load(open(args.rescore)) if args.rescore else {}
    policy = None if args.rescore else load_policy("embedded")
    print(f"{'task':20} {'format':6} {'reward':>15} {'relevance':>9}  seconds")
    for name in (list(saved) if args.rescore else args.tasks.split(",")):
        task = TASKS[name]
        scorer = load_scorer(name)
        for prompt_format in PROMPT_FORMATS:
            start = time.time()
            if args.rescore:
                per_sample, texts = saved[name][prompt_format]["inputs"], saved[name][prompt_format]["texts"]
            else:
                inputs = load_inputs(name, None, "eval", args.n_inputs)
                prompts = [task.build_prompt(x, policy.tokenizer, prompt_format) for x in inputs]
                config = DecodeConfig.for_task(task, seed=0)
                result = generate(policy, prompts, config, n=args.samples, columns=("base",))
                texts = [c.text for c in result.base]
                per_sample = [x for x in inputs for _ in range(args.samples)]
                saved.setdefault(name, {})[prompt_format] = {"inputs": per_sample, "texts": texts}
            scores = scorer(per_sample, texts)
            relevance = scorer.kit.relevance.cosines([task.source_text(x) for x in per_sample], texts)
            reward, se = mean_and_se([s["reward"] for s in scores])
            print(f"{name:20} {prompt_format:6} {reward:8.3f} ± {se:.3f} {statistics.fmean(relevance):9.3f}  {time.time() - start:5.1f}")
            for text, score in list(zip(texts, scores))[: args.show]:
                parts = ", ".join(f"{k} {v:.2f}" for k, v in score.items())
                print(f"    {text.strip()[:110]!r}  [{parts}]")
        if args.save:
            with open(args.save, "w") as f:
                json.dump(saved, f, indent=1)


if __name__ == "__main__":
    main()
