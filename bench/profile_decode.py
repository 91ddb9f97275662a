"""Where a tailored decoding step spends its time: torch.profiler over a short run at batch 1.

    python -m bench.profile_decode --device cuda
"""

from __future__ import annotations

import argparse
import time

from torch.profiler import ProfilerActivity, profile

from ipa.loading import load_host
from ipa.models import resolve_device, resolve_dtype
from ipa.policy_adapter import AdapterCard
from ipa.decoding.run import DecodeConfig, TailoredPolicy
from ipa.decoding.engine import generate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    host = load_host("embedded", device, resolve_dtype("auto", device))
    host.new_adapter("profile", AdapterCard())
    policy = TailoredPolicy(host, host, "profile")
    config = DecodeConfig(max_new_tokens=args.tokens, min_new_tokens=args.tokens, stop_at_eos=False, seed=0)
    prompt = ["The old lighthouse keeper climbed the stairs and"]
    generate(policy, prompt, config, columns=("tailored",))
    start = time.perf_counter()
    generate(policy, prompt, config, columns=("tailored",))
    print(f"tailored, batch 1: {args.tokens / (time.perf_counter() - start):.1f} tokens/s")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        generate(policy, prompt, config, columns=("tailored",))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
