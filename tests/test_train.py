"""RL training on a tiny model saved to disk (the real loop, the real toxicity scorer, seconds a run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from ipa.training.quark import DataPool
from ipa.training.loop import main as train_main, train
from ipa.training.pg import group_advantages
from ipa.training.config import TrainConfig, TrainError, tailored_token_stats
from ipa.policy_adapter import AdapterCard
from ipa.decoding.policy_math import tailored_logprobs
from ipa.decoding.run import TailoredPolicy
from ipa.tasks import WORD_JOINER
from tests.helpers import REPO, perturb_lora, run_module, save_tiny_model, tiny_config


def base_weights(directory) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(directory, "model.safetensors"))


def lora_weights(adapter_dir) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))


# --- pure pieces -------------------------------------------------------------------------------------------


def test_quantiles_of_a_hand_made_pool():
    pool = DataPool(n_quantiles=3, max_size=100)
    pool.add([[1]] * 6, [[2]] * 6, [0.9, 0.1, 0.5, 0.7, 0.3, 0.5])
    # ranked: 0.9 (0), 0.7 (3), 0.5 (2), 0.5 (5), 0.3 (4), 0.1 (1) -> two per quantile, ties in pool order
    assert pool.quantiles().tolist() == [0, 2, 1, 0, 2, 1]
    pool.add([[3]] * 2, [[4]] * 2, [0.0, 1.0])
    assert len(pool) == 8 and pool.quantiles()[-1] == 0 and pool.quantiles()[-2] == 2


def test_pool_keeps_the_most_recent_and_round_trips():
    pool = DataPool(2, max_size=3)
    pool.add([[1], [2, 2], [3]], [[10], [20], [30, 31]], [0.1, 0.2, 0.3])
    pool.add([[4]], [[40]], [0.4])
    assert pool.prompts == [[2, 2], [3], [4]] and pool.rewards == [0.2, 0.3, 0.4]
    copy = DataPool(2, 3)
    copy.load_tensors(pool.to_tensors())
    assert (copy.prompts, copy.completions, copy.rewards) == (pool.prompts, pool.completions, pool.rewards)


def test_group_advantages_match_a_naive_computation():
    rewards = torch.tensor([0.2, 0.4, 0.9, 0.5, 0.5, 0.5, 0.0, 1.0])
    got = group_advantages(rewards, 4)
    expected = []
    for g in range(2):
        group = rewards[4 * g: 4 * g + 4].tolist()
        mean = sum(group) / 4
        std = (sum((r - mean) ** 2 for r in group) / 4) ** 0.5
        expected += [(r - mean) / (std + 1e-4) for r in group]
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6)
    assert torch.equal(group_advantages(torch.full((4,), 0.3), 2), torch.zeros(4))  # no signal, no push


def test_token_stats_match_a_naive_computation(tiny_host):
    """Log-probs, KL and entropy from the packed batch equal a row-by-row full forward."""
    tiny_host.new_adapter("steer", AdapterCard())
    perturb_lora(tiny_host, "steer")
    policy = TailoredPolicy(tiny_host, tiny_host, "steer", "residual")
    tok = tiny_host.tokenizer
    prompts = [tok("Hello there", add_special_tokens=False)["input_ids"], tok("A much longer prompt than that", add_special_tokens=False)["input_ids"]]
    completions = torch.tensor([[11, 12, 13], [21, 22, 23]])
    alpha = 0.8
    stats = tailored_token_stats(policy, prompts, completions, alpha)
    for r, prompt in enumerate(prompts):
        ids = torch.tensor([prompt + completions[r].tolist()])
        span = slice(len(prompt) - 1, len(prompt) + 2)
        with torch.no_grad(), tiny_host.base_only() as base:
            b = base(ids).logits[0, span]
        with torch.no_grad(), tiny_host.only("steer") as adapted:
            a = adapted(ids).logits[0, span]
        tailored = tailored_logprobs(b, [a], b, [alpha])
        base_lp = torch.log_softmax(b, -1)
        logprob = tailored.gather(-1, completions[r].unsqueeze(-1)).squeeze(-1)
        kl = (tailored.exp() * (tailored - base_lp)).sum(-1)
        entropy = -(tailored.exp() * tailored).sum(-1)
        assert torch.allclose(stats["logprob"][r].detach(), logprob, atol=1e-4)
        assert torch.allclose(stats["kl"][r].detach(), kl, atol=1e-5)
        assert torch.allclose(stats["entropy"][r].detach(), entropy, atol=1e-4)
    # A frozen adapter builds no graph; a trainable one gets gradients, and nothing else does.
    assert not stats["logprob"].requires_grad
    tiny_host.set_trainable("steer", True)
    stats = tailored_token_stats(policy, prompts, completions, alpha)
    stats["logprob"].sum().backward()
    assert all(p.grad is not None for p in tiny_host.trainable_parameters("steer"))
    assert all(p.grad is None for n, p in tiny_host.peft.named_parameters() if "lora_" not in n)


# --- whole runs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["pg", "quark"])
def test_a_few_steps_change_the_adapter_and_not_the_base(tiny_dir, tmp_path, algo):
    before = base_weights(tiny_dir)
    events = []
    adapter_dir = train(tiny_config(tiny_dir, tmp_path / algo, algo=algo), on_event=events.append, progress=False)
    after = base_weights(tiny_dir)
    assert all(torch.equal(before[k], after[k]) for k in before)
    lora = lora_weights(adapter_dir)
    assert any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # B starts at zero
    card = json.loads((adapter_dir / "card.json").read_text())
    assert card["algorithm"] == algo and card["steps"] == 3 and card["task"] == "toxicity"
    assert "mean_reward" in card["metrics_before"] and "mean_reward" in card["metrics_after"]
    assert card["n_reward_tokens"] == (5 if algo == "quark" else 0)
    metrics = [json.loads(line) for line in (tmp_path / algo / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(0 <= m["reward"] <= 1 and m["samples_per_s"] > 0 for m in metrics)
    assert {e["type"] for e in events} >= {"step", "eval", "samples", "checkpoint", "done"}
    samples = (tmp_path / algo / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 3


@pytest.mark.parametrize("args, message", [
    (["--steps", "-3"], "steps must be a whole number of at least 0, got -3"),
    (["--lr", "nan"], "lr must be a number from"),
    (["--batch-size", "2.5"], "argument --batch-size: invalid int value"),
    (["--task", "poetry"], "Unknown task 'poetry'"),
    (["--algo", "ppo"], "Unknown algorithm 'ppo'"),
    (["--out", "/proc/no-such-dir/run"], "Cannot write to the output directory"),
    (["--resume", "--out", "/tmp/ipa-no-run-here"], "no checkpoint"),
    (["--batch-size", "6", "--group-size", "4"], "must be a multiple of group_size"),
])
def test_bad_settings_give_clear_errors(args, message, capsys, monkeypatch):
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # main() would take over pytest's Ctrl-C
    with pytest.raises(SystemExit) as exit_:
        train_main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow  # a process
def test_a_bad_setting_exits_2_with_one_line_and_no_traceback():
    """The parametrised cases above call main() in this process; here the real command line."""
    out = run_module("ipa.training.loop", "--task", "poetry")
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: Unknown task 'poetry'") and len(out.stderr.strip().splitlines()) == 1


def test_config_checks():
    with pytest.raises(TrainError, match="group_size must be a whole number of at least 2"):
        TrainConfig.from_fields(group_size=1)
    with pytest.raises(TrainError, match="alpha must be more than 0"):
        TrainConfig.from_fields(alpha=0)
    with pytest.raises(TrainError, match="Unknown training setting"):
        TrainConfig.from_fields(learning_rate=1e-3)
    assert TrainConfig.from_fields(algo="quark").decode.top_p == 0.6 and TrainConfig().decode.top_p == 0.9
    # The task's decoding defaults fill what is not given, before any check; what is saved is what runs.
    assert TrainConfig.from_fields(task="sentiment").decode.max_new_tokens == 20
    assert TrainConfig().run.steps == 0 and TrainConfig().run.max_steps == 20
    assert TrainConfig.from_fields(minutes=1).run.max_steps == 0


@pytest.mark.slow  # processes
def test_accelerate_launch_two_cpu_processes(tiny_dir, tmp_path):
    """Data parallel through accelerate: two processes, gradients averaged, one adapter written.

    `--cpu` alone starts one process in this accelerate version; `--multi_gpu` starts them through
    torchrun, and ACCELERATE_USE_CPU keeps them on the CPU (gloo)."""
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ipa.training.loop",
              "--task", "toxicity", "--base", tiny_dir, "--out", str(out), "--steps", "2", "--batch-size", "4",
              "--group-size", "2", "--max-new-tokens", "4", "--eval-prompts", "2", "--eval-samples", "1", "--eval-every", "0"]
    done = subprocess.run(launch, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert done.returncode == 0, "\n".join(line for line in done.stderr.splitlines() if not line.startswith(" "))[-3000:]
    card = json.loads((out / "adapter" / "card.json").read_text())
    assert card["steps"] == 2 and "2 processes" in card["machine"]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]


def test_approximate_policy_stands_in_for_a_large_base(tiny_dir, tokenizer, tmp_path):
    """--approx-base: training samples from a smaller model with the base's tokenizer; the card names both."""
    big = save_tiny_model(tmp_path / "big", tokenizer, seed=5, hidden=64)
    adapter_dir = train(tiny_config(tiny_dir, tmp_path / "approx", base=str(big), approx_base=tiny_dir, steps=2), progress=False)
    card = json.loads((adapter_dir / "card.json").read_text())
    assert card["base_model"] == big and card["adapter_init_model"] == tiny_dir
    assert card["init_fingerprint"]["hidden_size"] == 32
    # The adapter then steers the real base through its own (small) initial model.
    from ipa.loading import attach_adapter, load_host
    from ipa.decoding.run import DecodeConfig
    from ipa.decoding.engine import generate
    policy = attach_adapter(load_host(big), adapter_dir)
    assert not policy.shares_weights
    result = generate(policy, ["Hello there"], DecodeConfig(max_new_tokens=3, temperature=0))
    assert len(result.tailored[0].token_ids) == 3


@pytest.mark.slow  # MiniLM
def test_relevance_weight_scales_the_trained_reward(tiny_dir, tmp_path):
    adapter_dir = train(tiny_config(tiny_dir, tmp_path / "rel", relevance_weight=0.5, steps=1), progress=False)
    metrics = [json.loads(x) for x in (tmp_path / "rel" / "metrics.jsonl").read_text().splitlines()]
    assert "reward_relevance" in metrics[0] and "reward_task_reward" in metrics[0]
    assert metrics[0]["reward"] <= metrics[0]["reward_task_reward"] + 1e-9
    assert json.loads((adapter_dir / "card.json").read_text())["training"]["algo"]["relevance_weight"] == 0.5
    with pytest.raises(TrainError, match="relevance_weight must be a number from 0 to 1"):
        TrainConfig.from_fields(relevance_weight=1.5)


def test_training_prompts_keep_typed_special_tokens_as_text(tiny_dir, tmp_path):
    from tests.helpers import INJECTION

    data = tmp_path / "requests.jsonl"
    data.write_text("".join(json.dumps({"message": f"{INJECTION} {i}"}) + "\n" for i in range(12)))
    events = []
    train(tiny_config(tiny_dir, tmp_path / "run", task="dialogue_safety", prompts=str(data), steps=1, checkpoint_every=0),
          on_event=events.append, progress=False)
    prompts = [s["prompt"] for e in events if e["type"] == "samples" for s in e["samples"]]
    # Samples decode prompts without special tokens: an injected turn would have lost its markers.
    assert prompts and all(INJECTION in p.replace(WORD_JOINER, "") for p in prompts)
