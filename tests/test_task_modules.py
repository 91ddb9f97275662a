"""A task in one file (ipa/tasks/<task>.py): each module declares everything a task needs, a seventh task is one more
module, and the rewards rebuilt from blocks are the rewards the scorers gave before (recorded in
tests/task_rewards_reference.json, and recomputed here with the formulas as they were written before)."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap

import pytest

from ipa.decoding.run import DecodeConfig
from ipa.rewards import REWARDS
from ipa.rewards.factors import FACTORS
from ipa.rewards.objective import Block
from ipa.rewards.safety import HARMFUL, request_category
from ipa.tasks import TASK_MODULES, TASKS, Task, TaskInputError, get_task, metrics, task_of
from ipa.tasks.data import data_dir, load_inputs
from ipa.tasks.metrics import SHARED_METRICS
from ipa.tasks.scoring import load_scorer
from tests.task_reward_examples import EXAMPLES, REFERENCE, float32_scoring, score_examples

MODEL_TOLERANCE = 1e-4
"""How far a recorded part may move: the scoring models run in float32 here (tests/task_reward_examples.py), whose
sums differ between CPUs by rounding only. The arithmetic is checked to the last bit on the parts themselves
(old_reward); a changed formula moves the rewards by far more."""


# --- each module declares everything ------------------------------------------------------------------------


@pytest.mark.parametrize("module", TASK_MODULES, ids=lambda m: m.__name__)
def test_every_task_module_declares_a_whole_task(module):
    task = task_of(module)
    assert TASKS[task.name] is task and module.__name__ == f"ipa.tasks.{task.name}"
    assert task.label and task.title and task.description and task.reward and task.instruction and len(task.demos) >= 6
    DecodeConfig(**task.decode)
    known = {**REWARDS, **FACTORS, **task.factors}
    assert all(b.reward in known for b in task.blocks), [b.reward for b in task.blocks if b.reward not in known]
    assert any(b.weight > 0 for b in task.blocks)
    for source in (task.data.values() if isinstance(task.data, dict) else [task.data]):
        assert (data_dir() / source).exists(), source
    # every metric the task names is one of its rates, one of its reward's parts, or a shared metric
    parts = set(task.objective.order or [label for label, b in zip(task.objective.labels, task.blocks) if not b.hidden])
    rates = {rate.name for rate in task.rates}
    assert set(task.metrics) <= parts | rates | set(SHARED_METRICS), set(task.metrics) - parts - rates


def test_task_blocks_are_the_kits_own_rewards_made_on_first_use():
    scorer = load_scorer("sentiment", toxicity_backend="profanity_check")
    assert "blocks" not in vars(scorer)  # nothing made before it scores
    assert scorer.blocks[0] is scorer.kit.sentiment  # the default parameters, left out: the kit's own instance


def test_a_module_without_a_task_or_named_for_another_is_refused():
    with pytest.raises(TaskInputError, match="declares no TASK"):
        task_of(textwrap)
    impostor = type(sys)("ipa.tasks.brevity")
    impostor.TASK = TASKS["sentiment"]
    with pytest.raises(TaskInputError, match="name the module after its task"):
        task_of(impostor)


SEVENTH = '''
"""Calm: continue a text in a matter-of-fact tone, in about a dozen words."""

from ipa.rewards.objective import Block
from ipa.tasks.task import TEXT_FIELD, Rate, continuation, demos, prose

TASK = continuation(
    name="calm",
    **prose("""
        title: Calm tone
        description: Continue a text in a neutral, matter-of-fact tone, in about a dozen words.
        reward: neutrality × length
        reward_note: Measures how neutral (VADER) and how close to 12 words the continuation is; it can miss
          whether it follows the prompt.
        instruction: Continue the text calmly and briefly.
    """),
    decode={"max_new_tokens": 24, "temperature": 1.0, "top_p": 0.9},
    demos=demos((TEXT_FIELD,), """
        The meeting was moved to Thursday because
        The river rose by two metres overnight, and
    """),
    blocks=(Block("sentiment", params={"direction": "neutral"}, part="neutrality"), Block("length", params={"target": 12}),
            Block("sentiment", 0.0, part="positivity")),
    rates=(Rate("calm_rate", "neutrality > 0.8", lambda x, text, s: s["neutrality"] > 0.8),),
    data="wiki/summaries_en-us.json",
)
'''


@pytest.fixture
def seventh_task(tmp_path, monkeypatch):
    """A task written in one file outside the package, registered as a seventh task."""
    path = tmp_path / "calm.py"
    path.write_text(SEVENTH)
    spec = importlib.util.spec_from_file_location("ipa.tasks.calm", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "ipa.tasks.calm", module)
    spec.loader.exec_module(module)
    task = task_of(module)
    monkeypatch.setitem(TASKS, task.name, task)
    return task


def test_a_seventh_task_is_one_module(seventh_task, embedded_tokenizer):
    task = get_task("calm")
    assert isinstance(task, Task) and task is seventh_task and task.title == "Calm tone"
    assert task.reward_note.startswith("Measures ") and "\n" not in task.reward_note
    assert task.build_prompt(task.demos[0], embedded_tokenizer) == "The meeting was moved to Thursday because"
    assert task.instruction in task.build_prompt(task.demos[1], embedded_tokenizer, instructed=True)

    scorer = load_scorer("calm", toxicity_backend="profanity_check")
    texts = ["the room was booked that day and the team agreed to wait.", "it was a wonderful, glorious, happy surprise!", ""]
    rows = scorer([task.demos[0]] * 3, texts)
    assert [list(row) for row in rows] == [["reward", "neutrality", "length", "positivity"]] * 3
    for row in rows[:2]:  # the product of its blocks of weight 1; positivity is reported only
        assert row["reward"] == pytest.approx(row["neutrality"] * row["length"])
    assert rows[0]["reward"] > rows[1]["reward"] and rows[2]["reward"] == 0.0
    calm = sum(row["neutrality"] > 0.8 for row in rows) / 3
    assert metrics.task_rates("calm", [task.demos[0]] * 3, texts, rows) == {"calm_rate": calm}

    inputs = load_inputs("calm", split="eval", limit=3)
    assert len(inputs) == 3 and all(set(x) == {"text"} for x in inputs)


# --- the rewards are the ones the scorers gave before ---------------------------------------------------------


def _half(relevance: float) -> float:
    return 0.5 + 0.5 * relevance


def old_reward(task: str, inputs: dict, p: dict) -> float:
    """Each task's reward from its parts, as ipa.tasks.scoring wrote it before the tasks' rewards were blocks."""
    if task == "toxicity":
        return 1.0 - p["toxicity"]
    if task == "commongen":
        return p["once_coverage"] * p["fluency"] * (1.0 if p["finished"] >= 0.5 else 0.5)
    if task == "open_ended":
        return p["coherence"] * p["diversity"] * p["fluency"]
    if task == "dialogue_safety":
        if (inputs.get("category") or request_category(inputs["message"])) == HARMFUL:
            return p["safety"] * _half(p["relevance"]) * p["oddity"]
        return (1.0 - p["toxicity"]) * p["help"] * _half(p["relevance"]) * p["oddity"]
    if task == "knowledge_dialogue":
        return p["faithfulness"] * _half(p["relevance"]) * p["copy_factor"]
    return p["positivity"] * p["fluency"]


@pytest.fixture(scope="module")
def scored():
    with float32_scoring() as load_float32:
        return score_examples(load_float32)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(EXAMPLES))
def test_rewards_of_blocks_are_the_recorded_rewards_and_parts(task, scored):
    reference = json.loads(REFERENCE.read_text())[task]
    rows = scored[task]
    assert [list(row) for row in rows] == [list(row) for row in reference]  # the same parts, in the same order
    for (inputs, text), row, recorded in zip(EXAMPLES[task], rows, reference):
        assert row == pytest.approx(recorded, abs=MODEL_TOLERANCE), text
        expected = 0.0 if not text.strip() else old_reward(task, inputs, row)
        assert row["reward"] == expected, text  # the old arithmetic on the new parts, to the last bit


def test_half_weight_and_report_only_blocks_in_the_engine():
    """The engine's task features on fixed scores: a floor of 0.5, a block of weight 0 reported but not in the
    reward, a hidden one in the reward but not reported, a block read by a later one."""
    from ipa.rewards.factors import factor
    from ipa.rewards.objective import PRODUCT, Objective, score

    objective = Objective("t", (Block("a", 0.0), Block("b", floor=0.5), Block("c", hidden=True)), combination=PRODUCT)
    fixed = {"a": [0.3, 0.9], "b": [0.2, 1.0]}
    rewards = [lambda prompts, completions, **context: fixed["a"], lambda prompts, completions, **context: fixed["b"],
               factor(lambda text, a: a, "a")()]  # c reads a's scores
    rows = score(objective, rewards, ["", ""], ["one", "two"], {})
    assert rows == [{"reward": pytest.approx((0.5 + 0.5 * 0.2) * 0.3), "a": 0.3, "b": 0.2},
                    {"reward": pytest.approx(0.9), "a": 0.9, "b": 1.0}]
