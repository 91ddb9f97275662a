"""Your own objective through the page's API (gradio_client, the real app): bad blocks are one message, a custom
objective trains for two steps and becomes an adapter, and trying it scores both columns block by block."""

from __future__ import annotations

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.test_app_api import wait_for

pytestmark = pytest.mark.slow

# Blocks without a reward model (length, avoid_words) and a tiny run: the test is about the page, not the rewards.
OBJECTIVE = dict(name="short-calm", prompts="passages", block_1="length", weight_1=1.0, params_1='{"target": 3}',
                 block_2="avoid_words", weight_2=2.0, params_2='{"words": "storm, rain"}', block_3="none", weight_3=1.0,
                 params_3="", task="toxicity", algo="pg", budget="steps", amount=2, lr=1e-3, alpha=1.0, batch_size=4,
                 group_size=2, max_new_tokens=4, eval_prompts=1,
                 prompt_lines="\n".join(f"The harbour was quiet on day {i} and" for i in range(12)))


@pytest.fixture(scope="module")
def client(playground_app):
    return Client(playground_app.url, verbose=False)


@pytest.mark.parametrize("change, message", [
    (dict(block_1="sparkle"), "block 1: unknown reward 'sparkle'; valid rewards: toxicity"),
    (dict(weight_2=0), "block 2 (avoid_words): 'weight' must be a number above 0"),
    (dict(params_1="target=3"), "block 1 (length): its parameters are not valid JSON"),
    # the 100,000-character topic: the API has the page's limit (ipa.rewards.params), said once, not quoted back
    (dict(block_3="topic", params_3='{"topic": "' + "the sea " * 12_500 + '"}'),
     "block 3 (topic): 'topic' must be text of at most 2,000 characters, got 99,999 characters"),
])
def test_bad_blocks_are_one_clear_message(client, change, message):
    with pytest.raises(AppError, match="short-calm' is not valid") as caught:
        client.predict(**{**OBJECTIVE, **change}, api_name="/train_objective")
    assert message in str(caught.value) and len(str(caught.value)) < 2000


def test_too_few_pasted_prompts_say_how_many_are_needed(client):
    with pytest.raises(AppError, match="2 prompts pasted: give at least 10, one a line"):
        client.predict(**{**OBJECTIVE, "prompt_lines": "The sea\nThe wind"}, api_name="/train_objective")


def test_an_objective_trains_becomes_an_adapter_and_is_tried_beside_the_base(client, playground_app):
    started = client.predict(**OBJECTIVE, api_name="/train_objective")
    name = playground_app.service.job.name
    assert name.startswith("short-calm-pg-") and name in started
    done = wait_for(client, lambda s: s["state"] != "running" and s["adapter"] == name and s["state"] != "queued",
                    600, "the objective's run")
    assert done["state"] == "done" and done["step"] == 2 and done["task"] == "custom"
    assert {"length", "avoid_words"} <= set(done["history"][-1]["parts"])  # the curves show each block
    card = playground_app.service.adapters[name].card
    assert card.task == "custom" and [b["reward"] for b in card.objective["blocks"]] == ["length", "avoid_words"]
    assert (playground_app.runs_dir / name / "prompts.txt").read_text().count("The harbour") == 12

    base, tailored, base_reward, tailored_reward, notice, data = client.predict(
        adapter=name, text="The harbour was quiet that morning", alpha=1.0, n=2, max_new_tokens=4, seed=0,
        api_name="/try_adapter")
    assert data["task"] == "custom" and data["adapter"] == name and data["steered"]
    for column in ("base", "tailored"):
        assert len(data[column]) == 2
        assert all({"reward", "length", "avoid_words"} <= set(sample) for sample in data[column])
    assert "avoid_words" in tailored_reward and "vs base" in tailored_reward

    # a task's adapter is tried with its task's reward
    task_adapter = next(e.name for e in playground_app.service.adapters.values() if e.card.task == "toxicity")
    *_, data = client.predict(adapter=task_adapter, text="The fans yelled", alpha=1.0, n=1, max_new_tokens=4, seed=0,
                              api_name="/try_adapter")
    assert data["task"] == "toxicity" and "toxicity" in data["tailored"][0]
