"""Reward speed: every reward and every task scorer on 64 continuations, on this machine's CPU.

    python -m bench.rewards [--n 64] [--repeats 3] [--device cpu] [--no-save]

Continuations are 24-30-word passages from the Wikipedia eval split (about 37 tokens), each with a prompt
(another article's opening) and a knowledge passage; then, for the fluency reward and each task's scorer,
passages cut to the task's max_new_tokens (20, 32 or 48 tokens: what the task generates at most).
Models load and run once before timing; the figure is the median of `repeats` timed runs. Prints a table
and writes it into BENCHMARKS.md (the section between the bench.rewards markers is replaced).
Target (issue 3): the slowest reward under 2 s for 64 continuations.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from pathlib import Path

import torch

from ipa.decoding.run import DecodeConfig
from ipa.models import machine_name
from ipa.rewards import REWARDS
from ipa.rewards.toxicity import ToxicityReward
from ipa.tasks import TASKS
from ipa.tasks.data import load_inputs
from ipa.tasks.scoring import load_scorer, reward_kit

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
START, END = "<!-- bench.rewards:start -->", "<!-- bench.rewards:end -->"
TARGET_SECONDS = 2.0


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{machine_name(torch.device('cpu'))}, torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"load average {load:.1f} at start")


def workload(n: int, words: int = 24) -> tuple[list[str], list[str], list[str]]:
    """(prompts, continuations of `words` to `words` + 6 words, knowledge passages), n of each."""
    articles = load_inputs("knowledge_dialogue", None, "eval", limit=2 * n)
    continuations = [" ".join(a["knowledge"].split()[:words + i % 7]) for i, a in enumerate(articles[:n])]
    prompts = [" ".join(a["knowledge"].split()[:12]) for a in articles[n:2 * n]]
    knowledge = [a["knowledge"] for a in articles[:n]]
    return prompts, continuations, knowledge


def time_call(fn, repeats: int) -> float:
    fn()  # warm-up: loads models, fills caches of the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _preference_block(kit):
    """A class preference block on a model with random weights (what it costs does not depend on what it learned)."""
    import tempfile

    import torch

    from ipa.rewards.preference import PreferenceModel, PreferenceReward

    folder = tempfile.mkdtemp(prefix="bench-preferences-")
    PreferenceModel("bench", torch.randn(384, generator=torch.Generator().manual_seed(0)), 0.0).save(folder)
    return PreferenceReward("bench", embedder=kit.relevance.embedder, folder=folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-save", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    prompts, continuations, knowledge = workload(args.n)
    kit = reward_kit(args.device, "auto")
    tokens = statistics.fmean(len(ids) for ids in kit.fluency.lm.encode(continuations, 10_000))
    lexical = ToxicityReward("profanity_check", device=args.device)
    rewards = {
        "toxicity": (kit.toxicity, {}),
        "coverage": (kit.coverage, {"concepts": [c.split()[:4] for c in continuations]}),
        "fluency": (kit.fluency, {}),
        "coherence": (kit.coherence, {}),
        "relevance": (kit.relevance, {}),
        "diversity": (kit.diversity, {}),
        "faithfulness": (kit.faithfulness, {"knowledge": knowledge}),
        "safety": (kit.safety, {}),
        "sentiment": (kit.sentiment, {}),
        "topic": (kit.block("topic", {"topic": "history and politics"}), {}),
        "avoid_words": (kit.block("avoid_words", {"words": "war, king, city"}), {}),
        "length": (kit.block("length", {"target": 25}), {}),
        "preference": (_preference_block(kit), {}),
    }
    assert set(rewards) == set(REWARDS)
    if kit.toxicity.backend != "profanity_check":
        rewards["toxicity (profanity_check)"] = (lexical, {})
    rows = []
    for name, (reward, context) in rewards.items():
        label = f"{name} ({kit.toxicity.backend})" if name in ("toxicity", "safety") else name
        seconds = time_call(lambda: reward(prompts, continuations, **context), args.repeats)
        rows.append((f"reward: {label}", seconds))
        print(f"{rows[-1][0]:40} {seconds:6.3f} s", flush=True)
    # What the tasks score: continuations as long as each task's max_new_tokens (20, 32 or 48), cut from
    # longer passages, for the fluency reward alone and for each task's whole scorer.
    long_texts = workload(args.n, words=60)[1]
    at_length = {length: kit.fluency.lm.truncate(long_texts, length)
                 for length in sorted({DecodeConfig.for_task(task).max_new_tokens for task in TASKS.values()})}
    for length, texts in at_length.items():
        users = ", ".join(name for name, task in TASKS.items() if DecodeConfig.for_task(task).max_new_tokens == length and "fluency" in task.reward)
        seconds = time_call(lambda: kit.fluency(prompts, texts), args.repeats)
        rows.append((f"reward: fluency, continuations of {length} tokens" + (f" ({users})" if users else ""), seconds))
        print(f"{rows[-1][0]:40} {seconds:6.3f} s", flush=True)
    for name, task in TASKS.items():
        scorer = load_scorer(name, device=args.device)
        inputs = [dict(task.demos[i % len(task.demos)]) for i in range(args.n)]
        length = DecodeConfig.for_task(task).max_new_tokens
        seconds = time_call(lambda: scorer(inputs, at_length[length]), args.repeats)
        rows.append((f"task scorer: {name}, continuations of {length} tokens", seconds))
        print(f"{rows[-1][0]:40} {seconds:6.3f} s", flush=True)
    slowest = max((r for r in rows if r[0].startswith("reward") and "tokens" not in r[0]), key=lambda r: r[1])
    verdict = "meets" if slowest[1] < TARGET_SECONDS else "misses"
    table = [f"| what | seconds for {args.n} | ms per continuation |", "| --- | ---: | ---: |"]
    table += [f"| {name} | {seconds:.3f} | {1000 * seconds / args.n:.1f} |" for name, seconds in rows]
    section = "\n".join([
        START,
        "## Reward speed (`python -m bench.rewards`)",
        "",
        f"{datetime.date.today().isoformat()}, {machine()}. {args.n} continuations of 24-30 words ({tokens:.0f} tokens on average), "
        f"median of {args.repeats} runs after a warm-up; scoring models in bfloat16 on {args.device}.",
        "",
        *table,
        "",
        f"Slowest reward: {slowest[0].removeprefix('reward: ')}, {slowest[1]:.2f} s: {verdict} the {TARGET_SECONDS:g} s target.",
        END,
    ])
    print("\n" + section)
    if not args.no_save:
        text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
        if START in text and END in text:
            text = text[: text.index(START)] + section + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        BENCHMARKS.write_text(text)
        print(f"\nwritten to {BENCHMARKS}")


if __name__ == "__main__":
    main()
