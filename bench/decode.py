"""Decoding speed: base-only Hugging Face `generate` (float32 and bfloat16), the tailored policy and side by side
(with the project's defaults: the engine, --dtype auto), in one run.

    python -m bench.decode                       # CPU, writes the table into BENCHMARKS.md
    python -m bench.decode --device cuda --tokens 128

Rates are prompts × new tokens / second: a side-by-side run produces both columns at that rate. Each
figure is the median of --repeats timed runs after one warm-up; every run generates exactly --tokens
new tokens (EOS ignored) from the same prompts, with a trained-looking adapter (random LoRA weights)
so that the tailored path does all its work; the base-only figure is Hugging Face `generate` with its default
cache.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ipa.loading import load_host
from ipa.models import machine_name, resolve_device, resolve_dtype
from ipa.policy_adapter import AdapterCard
from ipa.decoding.run import DecodeConfig, TailoredPolicy
from ipa.decoding.engine import generate

PROMPTS = [
    "The old lighthouse keeper climbed the stairs and",
    "In the middle of the night, the phone rang and",
    "Our school's science fair this year was about",
    "The recipe calls for two cups of flour, but",
    "When the train finally arrived at the station,",
    "The museum's newest exhibit shows how",
    "After the storm, the whole village gathered to",
    "She opened the letter from her grandmother and",
]
TARGETS = {"tailored": ("base_generate", 1.0), "side_by_side": ("base_generate", 0.8),
           "tailored_vs_bf16": ("base_generate_bf16", 0.8)}
"""CPU targets at batch 1 (issue 10): each rate at least this multiple of Hugging Face generate's."""
GPU_TAILORED_TARGET = 500.0


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_it(fn, device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(device_name: str = "auto", dtype_name: str = "auto", tokens: int = 32, repeats: int = 3, batches=(1, 8)) -> dict:
    device = resolve_device(device_name)
    dtype = resolve_dtype(dtype_name, device)
    hosts = {torch.float32: load_host("embedded", device, torch.float32)}
    hosts[torch.bfloat16] = load_host("embedded", device, torch.bfloat16)
    host = hosts[dtype] if dtype in hosts else hosts.setdefault(dtype, load_host("embedded", device, dtype))
    host.new_adapter("bench", AdapterCard(task="custom"))
    generator = torch.Generator().manual_seed(0)
    for name, param in host.peft.named_parameters():
        if "lora_B" in name:  # make the adapter do real work: B = 0 would still cost the same, but be unrealistic
            param.data = (torch.randn(param.shape, generator=generator) * 0.01).to(param.device, param.dtype)
    policy = TailoredPolicy(host, host, "bench", "residual")
    tokenizer = host.tokenizer
    config = DecodeConfig(max_new_tokens=tokens, min_new_tokens=tokens, temperature=1.0, top_p=0.9, alpha=1.0, seed=0, stop_at_eos=False)
    rows = []
    for batch in batches:
        prompts = PROMPTS[:batch] if batch <= len(PROMPTS) else [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)

        def hf_generate(on):
            def go():
                with torch.inference_mode(), on.base_only() as base:
                    base.generate(**encoded, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True, top_p=0.9,
                                  pad_token_id=tokenizer.pad_token_id)
            return go

        modes = {
            "base_generate": hf_generate(hosts[torch.float32]),
            "base_generate_bf16": hf_generate(hosts[torch.bfloat16]),
            "tailored": lambda: generate(policy, prompts, config, columns=("tailored",)),
            "side_by_side": lambda: generate(policy, prompts, config),
        }
        rates = {mode: batch * tokens / time_it(fn, device, repeats) for mode, fn in modes.items()}
        rows.append({"batch": batch, **{k: round(v, 1) for k, v in rates.items()},
                     **{f"{name}_ratio": round(rates[name.removesuffix("_vs_bf16")] / rates[ref], 2)
                        for name, (ref, _) in TARGETS.items()}})
        print(json.dumps(rows[-1]), flush=True)
    return {"device": device.type, "machine": machine_name(device), "dtype": str(dtype).replace("torch.", ""), "tokens": tokens,
            "repeats": repeats, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "rows": rows}


def table(result: dict) -> str:
    lines = [f"Machine: {result['machine']} ({result['device']}, torch {result['torch']}); {result['date']}; "
             f"{result['tokens']} new tokens, median of {result['repeats']} runs; tailored and side by side with the "
             f"engine in {result['dtype']}.", "",
             "| batch | HF `generate` fp32 tok/s | HF `generate` bf16 tok/s | tailored tok/s | side-by-side tok/s "
             "| tailored / fp32 | side-by-side / fp32 | tailored / bf16 |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        lines.append(f"| {r['batch']} | {r['base_generate']} | {r['base_generate_bf16']} | {r['tailored']} | "
                     f"{r['side_by_side']} | {r['tailored_ratio']} | {r['side_by_side_ratio']} | {r['tailored_vs_bf16_ratio']} |")
    if result["device"] == "cpu":
        first = result["rows"][0]
        verdicts = [f"{name.replace('_vs_bf16', '')} ≥ {minimum} × {ref}: {first[name + '_ratio']} "
                    f"({'met' if first[name + '_ratio'] >= minimum else 'missed'})" for name, (ref, minimum) in TARGETS.items()]
        lines.append(f"\nTargets at batch {first['batch']}: " + "; ".join(verdicts) + ".")
    else:
        lines.append(f"\nTarget on a GPU: tailored at batch 1 ≥ {GPU_TAILORED_TARGET:g} tokens/s.")
    return "\n".join(lines)


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace (or append) one '## heading' section of BENCHMARKS.md, keeping the others."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    marker = f"## {heading}\n"
    if marker in text:
        start = text.index(marker)
        end = text.find("\n## ", start + len(marker))
        text = text[:start] + marker + "\n" + body.strip() + "\n" + (text[end:] if end != -1 else "")
    else:
        text = text.rstrip() + "\n\n" + marker + "\n" + body.strip() + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--out", default="BENCHMARKS.md", help="file to update ('' to only print)")
    parser.add_argument("--json", default="", help="also write the raw figures to this JSON file")
    args = parser.parse_args(argv)
    result = run(args.device, args.dtype, args.tokens, args.repeats, [int(b) for b in args.batches.split(",")])
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.out:
        heading = "Decoding speed (CPU)" if result["device"] == "cpu" else "Decoding speed (GPU)"
        command = "python -m bench.decode" + (" --device cuda" if result["device"] == "cuda" else "")
        command += f" --batches {args.batches}" if args.batches != parser.get_default("batches") else ""
        write_section(Path(args.out), heading, f"Command: `{command}`\n\n" + table(result))


if __name__ == "__main__":
    main()
