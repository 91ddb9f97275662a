"""Objectives: each reward block's cases, the combination formula, the file format and its errors, the bridge
to tasks (prompts, split, scorer), the adapter card, and rewards written in Python by the user.

Most cases need no model (VADER, lemmas, word counts); the topic block and the shared-model checks use the
real MiniLM, loaded once per session by ipa.rewards.resources.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ipa.errors import UserError
from ipa.policy_adapter import AdapterCard
from ipa.training.loop import train
from ipa.training.config import TrainConfig, TrainError
from ipa.rewards.avoid_words import AvoidWordsReward
from ipa.rewards.coverage import CoverageReward
from ipa.rewards.length import LengthReward
from ipa.rewards.objective import Objective, ObjectiveError, block_rewards, combine
from ipa.rewards.sentiment import SentimentReward
from ipa.rewards.topic import TopicReward
from ipa.rewards.user_module import RewardModuleError, load_reward_module
from ipa.tasks.data import DataError
from ipa.tasks.objective import (CUSTOM_TASK, PROMPT_SETS, load_objective, load_objective_scorer, objective_inputs,
                             objective_of_card, objective_task)
from ipa.tasks.scoring import reward_kit
from tests.helpers import run_module, tiny_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "objectives").glob("*.json"))
CHEERFUL_OCEAN = {"name": "cheerful-ocean", "blocks": [{"reward": "sentiment", "weight": 1.0},
                                                       {"reward": "topic", "topic": "the ocean and the sea", "weight": 1.0}],
                  "prompts": "passages"}


def objective(*blocks, name="test", prompts="passages") -> Objective:
    return Objective.from_dict({"name": name, "blocks": list(blocks), "prompts": prompts})


# --- blocks that need no model: table-driven cases ----------------------------------------------------------

BLOCK_CASES = [
    # (reward instance, continuation, expected score)
    (SentimentReward("positive"), "What a wonderful, happy day!", 0.9134),
    (SentimentReward("negative"), "What a wonderful, happy day!", 0.0866),
    (SentimentReward("negative"), "It was a sad, awful failure.", 0.9278),
    (SentimentReward("neutral"), "The meeting starts at nine in room four.", 1.0),
    (SentimentReward("neutral"), "What a wonderful, happy day!", 0.1732),
    (AvoidWordsReward("rain, cloud"), "It rained all day.", 0.5),          # inflection caught
    (AvoidWordsReward("rain, cloud"), "Clouds gathered and it was raining.", 0.0),
    (AvoidWordsReward("rain, cloud"), "The sun came out.", 1.0),
    (AvoidWordsReward("rain, cloud"), "Rainy skies.", 1.0),                 # another lemma: not caught
    (AvoidWordsReward(["catch"]), "The dog caught it.", 0.0),               # irregular past tense
    (AvoidWordsReward("Rain"), "RAIN again.", 0.0),                         # case ignored
    (LengthReward(8), "one two three four five six seven eight", 1.0),
    (LengthReward(8), "one two three four five six", math.exp(-0.5)),       # one tolerance (8 / 4) short
    (LengthReward(8), "one two three four five six seven eight nine ten", math.exp(-0.5)),  # one too long
    (LengthReward(8, tolerance=4), "one two three four", math.exp(-0.5)),
    (LengthReward(2), "don't stop", 1.0),                                   # "don't" is one word
    (CoverageReward(words="boat harbour wind"), "The boats left the harbour.", 2 / 3),
    (CoverageReward(words=["boat"]), "Nothing floats here.", 0.0),
]


@pytest.mark.parametrize("reward,text,expected", BLOCK_CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_block_cases(reward, text, expected):
    assert reward(["A prompt"], [text]) == [pytest.approx(expected, abs=1e-3)]


@pytest.mark.parametrize("reward", [SentimentReward("negative"), SentimentReward("neutral"), AvoidWordsReward("rain"),
                                    LengthReward(5), CoverageReward(words="boat")])
def test_every_block_scores_an_empty_continuation_zero(reward):
    assert reward(["", ""], ["", "   "]) == [0.0, 0.0]


def test_length_in_tokens_counts_the_base_tokenizer(tokenizer):
    reward = LengthReward(4, unit="tokens", tokenizer=tokenizer)
    text = "The sea was calm."
    assert reward.lengths([text]) == [len(tokenizer(text, add_special_tokens=False)["input_ids"])]
    assert reward([""], [text])[0] == pytest.approx(math.exp(-0.5 * ((reward.lengths([text])[0] - 4) / 1) ** 2))


# --- the combination --------------------------------------------------------------------------------------

COMBINE_CASES = [
    # (scores, weights, R)
    ([0.9, 0.4], [1, 1], 0.6),                       # sqrt(0.36)
    ([0.9, 0.0], [1, 1], 0.0),                       # a zero cannot be hidden
    ([0.9, 0.0], [100, 0.01], 0.0),                  # not even under a tiny weight
    ([0.5, 0.5, 0.5], [1, 2, 3], 0.5),               # equal scores give that score back
    ([0.9, 0.4], [2, 1], (0.9 ** 2 * 0.4) ** (1 / 3)),
    ([0.9, 0.9, 0.4], [1, 1, 1], (0.9 ** 2 * 0.4) ** (1 / 3)),   # weight 2 = the block twice
    ([1.0], [3], 1.0),
]


@pytest.mark.parametrize("scores,weights,expected", COMBINE_CASES)
def test_weighted_geometric_mean(scores, weights, expected):
    assert combine(scores, weights) == pytest.approx(expected)


# --- the file format and its errors -----------------------------------------------------------------------


def test_the_issue_example_parses_and_round_trips_through_json():
    parsed = Objective.from_dict(CHEERFUL_OCEAN)
    assert parsed.labels == ["sentiment", "topic"] and parsed.weights == [1.0, 1.0]
    assert parsed.blocks[0].params == {"direction": "positive"}        # the default, filled in
    assert parsed.blocks[1].params == {"topic": "the ocean and the sea"}
    assert Objective.from_json(parsed.to_json()) == parsed
    assert json.loads(parsed.to_json())["blocks"][1] == {"reward": "topic", "topic": "the ocean and the sea", "weight": 1.0}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_shipped_examples_load_and_round_trip(path, tmp_path):
    loaded = load_objective(path)
    assert loaded.name == path.stem and loaded.prompts in PROMPT_SETS
    loaded.save(tmp_path / "copy.json")
    assert load_objective(tmp_path / "copy.json") == loaded


def test_at_least_two_examples_ship():
    assert len(EXAMPLES) >= 2 and (REPO / "objectives" / "cheerful-ocean.json") in EXAMPLES


def test_repeated_rewards_get_numbered_labels():
    both = objective({"reward": "topic", "topic": "the sea"}, {"reward": "topic", "topic": "boats"})
    assert both.labels == ["topic", "topic_2"]
    assert objective({"reward": "toxicity"}).labels == ["low_toxicity"]  # the score is 1 − toxicity


def test_weight_defaults_to_one():
    assert objective({"reward": "fluency"}).weights == [1.0]


BAD_OBJECTIVES = [
    # (objective dict, what the one error must say)
    ({"name": "x", "blocks": [{"reward": "politeness"}]}, r"unknown reward 'politeness'; valid rewards: toxicity, coverage, .*topic, avoid_words, length"),
    ({"name": "x", "blocks": [{"reward": "faithfulness"}]}, r"faithfulness cannot be a block: it needs a knowledge passage"),
    ({"name": "x", "blocks": [{"reward": "topic", "subject": "sea"}]}, r"unknown parameter 'subject' and missing required parameter 'topic'; valid parameters: topic \(required"),
    ({"name": "x", "blocks": [{"reward": "sentiment", "direction": "happy"}]}, r"'direction' must be one of positive, negative, neutral"),
    ({"name": "x", "blocks": [{"reward": "fluency", "model": "gpt2"}]}, r"unknown parameter 'model'; valid parameters: none"),
    ({"name": "x", "blocks": [{"reward": "length"}]}, r"missing required parameter 'target'; valid parameters: target .*unit .*tolerance"),
    ({"name": "x", "blocks": [{"reward": "length", "target": 0}]}, r"'target' must be a number from 1 to 500"),
    ({"name": "x", "blocks": [{"reward": "avoid_words", "words": []}]}, r"'words' must be a list of words"),
    ({"name": "x", "blocks": [{"reward": "fluency", "weight": 0}]}, r"'weight' must be a number above 0 and at most 100, got 0 \(to drop a block, remove it\)"),
    ({"name": "x", "blocks": [{"reward": "fluency", "weight": -1}]}, r"'weight' must be a number above 0"),
    ({"name": "x", "blocks": [{"reward": "fluency", "weight": "2"}]}, r"'weight' must be a number above 0"),
    ({"name": "x", "blocks": [{"reward": "fluency", "weight": float("nan")}]}, r"'weight' must be a number above 0"),
    ({"name": "x", "blocks": [{"reward": "fluency", "weight": True}]}, r"'weight' must be a number above 0"),
    ({"name": "x", "blocks": []}, r"'blocks' must be a non-empty list"),
    ({"name": "bad name/..", "blocks": [{"reward": "fluency"}]}, r"'name' must be 1 to 64 letters"),
    ({"name": "x", "blocks": [{"reward": "fluency"}], "prompt": "passages"}, r"unknown key 'prompt' \(valid keys: name, blocks, prompts\)"),
    (["not", "an", "object"], r"An objective is a JSON object"),
]


@pytest.mark.parametrize("data,message", BAD_OBJECTIVES)
def test_bad_objectives_are_one_clear_error(data, message):
    with pytest.raises(ObjectiveError, match=message):
        Objective.from_dict(data)


HUGE = "the sea " * 12_500  # 100,000 characters: the issue's /train_objective topic


@pytest.mark.parametrize("block, field", [
    ({"reward": "topic", "topic": HUGE}, "'topic'"),
    ({"reward": "avoid_words", "words": HUGE}, "'words'"),
    ({"reward": "coverage", "words": HUGE.split()}, "'words'"),
])
def test_free_text_has_one_limit_wherever_the_objective_comes_from(tmp_path, block, field):
    """The page's blocks, the API (both page_objective), an objective file and an uploaded adapter's card all reach
    Param.check: one limit, ipa.errors.MAX_TEXT_CHARS, one message naming the block and the field."""
    from ipa.errors import MAX_TEXT_CHARS
    from app.config import AppConfig
    from app.objective_form import page_objective

    message = f"block 1 ({block['reward']}): {field} must be text of at most 2,000 characters"
    assert MAX_TEXT_CHARS == 2000 == AppConfig().max_input_chars  # the page's boxes have the same limit
    data = {"name": "huge", "blocks": [block]}
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(data))
    params = json.dumps({k: v for k, v in block.items() if k != "reward"})
    for enter in (lambda: Objective.from_dict(data), lambda: load_objective(path),
                  lambda: page_objective("huge", "passages", [(block["reward"], 1, params)]),
                  lambda: objective_of_card({"task": CUSTOM_TASK, "objective": data})):
        with pytest.raises(ObjectiveError) as caught:
            enter()
        assert message in str(caught.value) and len(str(caught.value)) < 1000  # the message does not quote it all
    at_limit = {**block, **{k: v[:MAX_TEXT_CHARS].strip() for k, v in block.items() if isinstance(v, str) and k != "reward"}}
    if isinstance(block.get("words"), list):
        at_limit["words"] = HUGE.split()[:200]
    assert Objective.from_dict({"name": "fits", "blocks": [at_limit]}).blocks[0].params


def test_names_and_prompts_of_an_objective_are_no_paths_and_no_essays():
    for data, message in [({"name": "x\n", "blocks": [{"reward": "fluency"}]}, "'name' must be 1 to 64 letters"),
                          ({"name": "x", "blocks": [{"reward": "fluency"}], "prompts": "p" * 3000},
                           "'prompts' must be a prompt set's name or a file name of at most 2,000 characters"),
                          ({"name": "x", "blocks": [{"reward": ["topic"]}]}, "block 1: unknown reward ['topic']")]:
        with pytest.raises(ObjectiveError, match=re.escape(message)):
            Objective.from_dict(data)


def test_every_problem_is_in_the_one_error():
    with pytest.raises(ObjectiveError) as err:
        Objective.from_dict({"name": "x", "blocks": [{"reward": "politeness"}, {"reward": "fluency", "weight": 0},
                                                     {"reward": "topic"}]})
    text = str(err.value)
    assert "block 1: unknown reward" in text and "block 2 (fluency): 'weight'" in text and "block 3 (topic): missing" in text


def test_a_file_that_is_not_json_or_missing(tmp_path):
    (tmp_path / "bad.json").write_text("{name: oops")
    with pytest.raises(ObjectiveError, match=r"bad.json is not valid JSON"):
        load_objective(tmp_path / "bad.json")
    with pytest.raises(ObjectiveError, match=r"does not exist"):
        load_objective(tmp_path / "nope.json")


def test_unknown_prompts_lists_the_prompt_sets(tmp_path):
    path = tmp_path / "o.json"
    path.write_text(json.dumps({**CHEERFUL_OCEAN, "prompts": "poems"}))
    with pytest.raises(ObjectiveError, match=r"prompts 'poems' is neither a prompt set \(passages, realtoxicityprompts, questions, requests\)"):
        load_objective(path)


# --- the bridge: an objective used like a task --------------------------------------------------------------


@pytest.mark.parametrize("name", list(PROMPT_SETS))
def test_every_prompt_set_gives_a_task_with_disjoint_held_back_prompts(name, tokenizer):
    obj = objective({"reward": "fluency"}, prompts=name)
    task = objective_task(obj)
    train, held_back = objective_inputs(obj, "train", limit=200), objective_inputs(obj, "eval", limit=50)
    assert train and held_back and not {task.source_text(x) for x in train} & {task.source_text(x) for x in held_back}
    prompt = task.build_prompt(train[0], tokenizer)
    assert task.source_text(train[0]) in prompt
    assert (task.prompt_format == "chat") == ("<|im_start|>" in prompt)
    assert task.demos and task.name == "test" and "fluency" in task.reward


def test_prompts_from_a_file_are_split_and_read_beside_the_objective(tmp_path):
    lines = [f"The harbour number {i} was quiet that morning, and" for i in range(40)]
    (tmp_path / "mine.txt").write_text("\n".join(lines))
    (tmp_path / "o.json").write_text(json.dumps({**CHEERFUL_OCEAN, "prompts": "mine.txt"}))
    obj = load_objective(tmp_path / "o.json")
    assert Path(obj.prompts) == tmp_path / "mine.txt"
    train, held_back = objective_inputs(obj, "train"), objective_inputs(obj, "eval")
    assert len(train) + len(held_back) == 40 and held_back and train
    assert {x["text"] for x in train}.isdisjoint(x["text"] for x in held_back)
    assert objective_task(obj).prompt_format == "raw"


def test_a_prompts_file_with_too_few_prompts(tmp_path):
    (tmp_path / "few.txt").write_text("one prompt\nanother prompt\n")
    with pytest.raises(DataError, match=r"holds 2 usable prompts: give at least 10"):
        objective_inputs(objective({"reward": "fluency"}), "train", path=str(tmp_path / "few.txt"))


def test_a_length_target_fits_in_max_new_tokens():
    short = objective_task(objective({"reward": "length", "target": 5}))
    long = objective_task(objective({"reward": "length", "target": 60}))
    assert short.decode["max_new_tokens"] == PROMPT_SETS["passages"].decode["max_new_tokens"]
    assert long.decode["max_new_tokens"] >= 60 * 1.25


def test_scorer_reports_each_block_and_their_geometric_mean():
    obj = objective({"reward": "sentiment", "weight": 2}, {"reward": "avoid_words", "words": "rain"},
                    {"reward": "length", "target": 6})
    scorer = load_objective_scorer(obj, toxicity_backend="profanity_check")
    texts = ["and the sun shone warmly on everyone", "and it rained on the sad town", ""]
    rows = scorer([{"text": "The day began"}] * 3, texts)
    assert [list(r) for r in rows] == [["reward", "sentiment", "avoid_words", "length"]] * 3
    for row in rows[:2]:
        assert row["reward"] == pytest.approx(combine([row["sentiment"], row["avoid_words"], row["length"]], [2, 1, 1]))
    assert rows[1]["avoid_words"] == 0.0 and rows[1]["reward"] == 0.0   # the word used: nothing hides it
    assert rows[0]["reward"] > 0.5 and rows[2]["reward"] == 0.0


def test_kit_reuses_its_instances_and_builds_new_ones_with_its_models():
    kit = reward_kit("cpu", "profanity_check")
    assert kit.block("sentiment", {"direction": "positive"}) is kit.sentiment
    assert kit.block("fluency", {}) is kit.fluency
    negative = kit.block("sentiment", {"direction": "negative"})
    assert negative is not kit.sentiment and negative.direction == "negative"


@pytest.mark.slow
def test_topic_block_shares_minilm_and_ranks_on_topic_text_first():
    scorer = load_objective_scorer(Objective.from_dict(CHEERFUL_OCEAN), toxicity_backend="profanity_check")
    topic = scorer.blocks[1]
    assert isinstance(topic, TopicReward) and topic.embedder is scorer.kit.relevance.embedder  # no second MiniLM
    rows = scorer([{"text": "The morning was"}] * 3, [
        "bright, and the waves rolled gently onto the sunny beach as happy children swam in the sea.",
        "bright, and the city council happily approved the new budget for the library.",
        "grey, and the waves crashed angrily over the broken sea wall, drowning the sad harbour."])
    ocean_happy, council_happy, ocean_sad = rows
    assert ocean_happy["topic"] > 0.6 > 0.4 > council_happy["topic"]
    assert ocean_sad["topic"] > 0.6 and ocean_sad["sentiment"] < 0.5
    assert ocean_happy["reward"] > max(council_happy["reward"], ocean_sad["reward"])


# --- the adapter card --------------------------------------------------------------------------------------


def test_the_objective_round_trips_through_the_card(tiny_host, tmp_path):
    obj = Objective.from_dict(CHEERFUL_OCEAN)
    tiny_host.new_adapter("mine", AdapterCard(task=CUSTOM_TASK, objective=obj.to_dict()))
    tiny_host.save_adapter("mine", tmp_path / "mine")
    card = tiny_host.load_adapter("copy", tmp_path / "mine")
    assert card.task == CUSTOM_TASK and objective_of_card(card) == obj


def test_an_old_card_without_an_objective_still_loads():
    old = {"task": "toxicity", "base_model": "embedded", "combination": "residual", "alpha": 1.0}
    assert AdapterCard.from_dict(old).objective == {} and objective_of_card(AdapterCard.from_dict(old)) is None


# --- rewards written in Python (command line only) ----------------------------------------------------------

USER_MODULE = '''
from ipa.rewards.params import Param

class Exclaims:
    """share of sentences that end with '!'"""
    PARAMS = (Param("bonus", "number", "added to every score", 0.0, low=0, high=1),)

    def __init__(self, bonus=0.0):
        self.bonus = bonus

    def __call__(self, prompts, completions, **context):
        return [min(1.0, float(c.count("!")) / max(1, c.count("!") + c.count(".")) + self.bonus) for c in completions]

class Raises:
    def __call__(self, prompts, completions, **context):
        raise ZeroDivisionError("oops")

class OutOfRange:
    def __call__(self, prompts, completions, **context):
        return [2.0 for _ in completions]

class Short:
    def __call__(self, prompts, completions, **context):
        return []

class NeedsArgs:
    def __init__(self, model_path):
        pass
    def __call__(self, prompts, completions, **context):
        return [0.5 for _ in completions]
'''


@pytest.fixture
def user_module(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(USER_MODULE)
    return path


def test_a_user_reward_is_a_block_with_its_parameters(user_module):
    name, cls = load_reward_module(f"{user_module}:Exclaims")
    obj = Objective.from_dict({"name": "loud", "blocks": [{"reward": "Exclaims", "bonus": 0.25}, {"reward": "avoid_words", "words": "rain"}]},
                              extra_rewards={name: cls})
    scorer = load_objective_scorer(obj, toxicity_backend="profanity_check", extra_rewards={name: cls})
    rows = scorer([{"text": "Look"}] * 2, ["at the sea! So blue!", "at the sea. It is blue."])
    assert rows[0]["Exclaims"] == 1.0 and rows[1]["Exclaims"] == 0.25
    with pytest.raises(ObjectiveError, match=r"unknown parameter 'volume'; valid parameters: bonus"):
        Objective.from_dict({"name": "loud", "blocks": [{"reward": "Exclaims", "volume": 3}]}, extra_rewards={name: cls})
    assert "Exclaims" not in block_rewards()  # only where the command line loaded it


@pytest.mark.parametrize("spec,message", [
    # a module that does not load
    ("{dir}/my_rewards.py:Nope", r"has no class 'Nope'; its classes: Exclaims, NeedsArgs, OutOfRange, Raises, Short"),
    ("{dir}/missing.py:Exclaims", r"is not a Python file that exists"),
    ("{dir}/my_rewards.py", r"takes FILE.py:ClassName"),
    ("{dir}/broken.py:Exclaims", r"broken.py:Exclaims raised SyntaxError while loading"),
    # a class that loads, then fails when created or when it scores
    ("{dir}/my_rewards.py:Raises", r"my_rewards.py:Raises raised ZeroDivisionError while scoring: oops"),
    ("{dir}/my_rewards.py:OutOfRange", r"my_rewards.py:OutOfRange returned 2.0: every score must be a number in \[0, 1\]"),
    ("{dir}/my_rewards.py:Short", r"my_rewards.py:Short returned 0 scores for 2 completions"),
    ("{dir}/my_rewards.py:NeedsArgs", r"my_rewards.py:NeedsArgs raised TypeError when created"),
])
def test_a_failing_reward_module_is_one_error_naming_it(user_module, spec, message):
    (user_module.parent / "broken.py").write_text("def oops(:\n")
    with pytest.raises(RewardModuleError, match=message):
        _, cls = load_reward_module(spec.format(dir=user_module.parent))
        cls()(["a", "b"], ["x", "y"])


# --- training for an objective (ipa.training.loop --objective), on a tiny model ---------------------------------


LOUD_AND_SHORT = {"name": "loud-and-short", "prompts": "passages",
                  "blocks": [{"reward": "Exclaims", "bonus": 0.1}, {"reward": "length", "target": 3, "unit": "tokens"}]}


def test_an_objective_trains_resumes_and_is_on_the_card(tiny_dir, tmp_path, user_module):
    """The same loop as a task's: the objective's prompts and blocks (one from a user's Python file), every block
    logged, the card holding the objective; a resumed run continues it, and refuses another objective."""
    path = tmp_path / "loud.json"
    path.write_text(json.dumps(LOUD_AND_SHORT))
    settings = dict(objective=str(path), reward_module=f"{user_module}:Exclaims", steps=2)
    adapter_dir = train(tiny_config(tiny_dir, tmp_path / "run", **settings), progress=False)
    assert adapter_dir == tmp_path / "run" / "adapter"
    lora = load_file(adapter_dir / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # B starts at zero
    card = json.loads((adapter_dir / "card.json").read_text())
    assert card["task"] == CUSTOM_TASK and card["training"]["run"]["objective"] == str(path)
    with_module = {"Exclaims": load_reward_module(f"{user_module}:Exclaims")[1]}
    assert objective_of_card(card, with_module) == load_objective(path, with_module)
    assert {"objective_Exclaims", "objective_length"} <= card["metrics_after"].keys()  # as ipa.evaluation.evaluate names them
    with pytest.raises(ObjectiveError, match=r"uses reward\(s\) Exclaims from a Python file: give it with --reward-module"):
        objective_of_card(card)

    train(tiny_config(tiny_dir, tmp_path / "run", **{**settings, "steps": 3}, resume=True), progress=False)
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(0 <= m["reward_length"] <= 1 and m["reward_Exclaims"] >= 0.1 for m in metrics)
    path.write_text(json.dumps({**LOUD_AND_SHORT, "blocks": LOUD_AND_SHORT["blocks"][1:]}))
    with pytest.raises(TrainError, match="was made for the objective .* not the objective"):
        train(tiny_config(tiny_dir, tmp_path / "run", objective=str(path), steps=4, resume=True), progress=False)


def test_objective_settings_are_checked_before_any_model_loads(tmp_path, user_module):
    path = tmp_path / "o.json"
    path.write_text(json.dumps(CHEERFUL_OCEAN))
    config = TrainConfig.from_fields(objective=str(path))
    assert (config.run.task, config.run.adapter_name, config.decode.max_new_tokens) == (CUSTOM_TASK, "cheerful-ocean", 20)
    assert TrainConfig.from_fields(objective=str(path), name="mine").run.adapter_name == "mine"
    for settings, message in [
        (dict(objective=str(path), task="sentiment"), "Give a task or an objective, not both"),
        (dict(reward_module=f"{user_module}:Exclaims"), "give the objective too"),
        (dict(task=CUSTOM_TASK), "is an objective's: give the objective"),
        (dict(objective=str(tmp_path / "none.json")), "does not exist"),
        (dict(objective=str(path), reward_module=f"{user_module}:Nope"), "has no class 'Nope'"),
    ]:
        with pytest.raises(UserError, match=message):
            TrainConfig.from_fields(**settings)


def test_a_user_reward_that_raises_stops_training_with_one_line_naming_it(tiny_dir, tmp_path, user_module):
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"name": "boom", "blocks": [{"reward": "Raises"}]}))
    done = run_module("ipa.training.loop", "--objective", str(path), "--reward-module", f"{user_module}:Raises", "--base", tiny_dir,
                         "--out", str(tmp_path / "run"), "--steps", "1", "--batch-size", "2", "--group-size", "2",
                         "--max-new-tokens", "2", "--eval-prompts", "1", "--eval-samples", "1", "--device", "cpu")
    assert done.returncode == 2, done.stderr
    assert "my_rewards.py:Raises raised ZeroDivisionError while scoring: oops" in done.stderr
    assert "Traceback" not in done.stderr


def test_evaluate_and_generate_score_with_the_adapters_own_objective(tiny_dir, tmp_path, user_module, capsys):
    """ipa.evaluation.evaluate and ipa.commands.generate take the objective from the adapter's card (its Python block from
    --reward-module); its blocks are reported beside the metrics, prefixed so that none can shadow a metric."""
    from ipa.commands.generate import main as generate_main
    from ipa.evaluation.evaluate import build_parser, evaluate

    path = tmp_path / "loud.json"
    path.write_text(json.dumps({**LOUD_AND_SHORT, "blocks": [*LOUD_AND_SHORT["blocks"], {"reward": "relevance"}]}))
    module = f"{user_module}:Exclaims"
    adapter = str(train(tiny_config(tiny_dir, tmp_path / "run", objective=str(path), reward_module=module, steps=1),
                        progress=False))
    common = ["--base", tiny_dir, "--device", "cpu", "--max-new-tokens", "4"]
    report = evaluate(build_parser().parse_args(["--adapter", adapter, "--reward-module", module, "--limit", "2",
                                                 "--samples-per-prompt", "1", *common]))
    assert report["task"] == CUSTOM_TASK and report["objective"]["name"] == "loud-and-short"
    blocks = {"objective_Exclaims", "objective_length", "objective_relevance"}
    assert blocks <= report["tailored"].keys() and "relevance" in report["tailored"]  # the metric and the block, apart
    assert report["tailored"]["relevance"] != report["tailored"]["objective_relevance"]

    generate_main(["--adapter", adapter, "--reward-module", module, "--prompt", "The harbour was quiet", "--json", *common])
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == CUSTOM_TASK and out["task_inputs"] == {"text": "The harbour was quiet"}
    assert set(out["tailored_rewards"][0]) == {"reward", "Exclaims", "length", "relevance"}

    # --objective scores any generation with an objective; an adapter's Python block needs its module again.
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"name": "short", "blocks": [{"reward": "length", "target": 3}]}))
    generate_main(["--objective", str(short), "--prompt", "The harbour", "--json", *common])
    assert set(json.loads(capsys.readouterr().out)["base_rewards"][0]) == {"reward", "length"}
    with pytest.raises(SystemExit) as exit_info:
        generate_main(["--adapter", adapter, "--prompt", "The harbour", *common])
    assert exit_info.value.code == 2 and "give it with --reward-module" in capsys.readouterr().err
    with pytest.raises(ObjectiveError, match="give it with --reward-module"):
        evaluate(build_parser().parse_args(["--adapter", adapter, *common]))
