"""Your own objective from the page (app.service.page_objective, Playground.start_training with an objective): the
page's blocks become one checked objective, bad ones one clear message, and the run trains on a file in its own folder.

The training loop is tests/test_training_jobs.py's fake, so these need no model; tests/test_app_api.py's
objective tests train and try one for real through the page's API."""

from __future__ import annotations

import json

import pytest

from app.config import AppConfig
from app.service import Playground, page_objective
from app.training_jobs import TrainingQueue, TrainRequest
from rewards.objective import ObjectiveError
from tasks.objective import CUSTOM_TASK
from tests.test_training_jobs import FakeTrain, wait_until

TOPIC = ("topic", 2, '{"topic": "the ocean and the sea"}')


def test_the_page_blocks_make_the_objective_file_format():
    objective = page_objective("cheerful-ocean", "passages", [("sentiment", 1, ""), TOPIC, ("none", 1, "")])
    assert objective.to_dict() == {"name": "cheerful-ocean", "prompts": "passages", "blocks": [
        {"reward": "sentiment", "direction": "positive", "weight": 1.0},
        {"reward": "topic", "topic": "the ocean and the sea", "weight": 2.0}]}


@pytest.mark.parametrize("rows, prompts, message", [
    ([("sparkle", 1, "")], "passages", "block 1: unknown reward 'sparkle'; valid rewards: toxicity, coverage"),
    ([("sentiment", 0, "")], "passages", "block 1 (sentiment): 'weight' must be a number above 0"),
    ([("sentiment", None, "")], "passages", "'weight' must be a number above 0"),
    ([TOPIC, ("length", 1, "{target: 20}")], "passages", "block 2 (length): its parameters are not valid JSON"),
    ([("length", 1, '[20]')], "passages", "must be a JSON object of the reward's parameters"),
    ([("topic", 1, '{"subject": "sea"}')], "passages", "unknown parameter 'subject' and missing required parameter 'topic'; valid parameters: topic (required"),
    ([("none", 1, "")], "passages", "has no block: choose at least one reward"),
    ([TOPIC], "/etc/passwd", "prompts must be one of the prompt sets passages, realtoxicityprompts"),
])
def test_bad_blocks_give_one_message_that_says_what_is_valid(rows, prompts, message):
    with pytest.raises(ObjectiveError, match="^Objective 'sea' ") as caught:
        page_objective("sea", prompts, rows)
    assert message in str(caught.value)


def test_a_bad_name_is_refused():
    with pytest.raises(ObjectiveError, match="'name' must be 1 to 64 letters"):
        page_objective("../../etc", "passages", [TOPIC])


def test_an_objective_run_trains_on_the_objective_written_into_its_own_folder(tmp_path):
    service = Playground.__new__(Playground)  # only what start_training uses: no models
    service.config = AppConfig(runs_dir=str(tmp_path / "runs"), device="cpu")
    service.adapters, service.device = {}, "cpu"
    train, finished = FakeTrain(), []
    service.training = TrainingQueue(train, lambda job, directory: finished.append(job.name), lambda name: None,
                                     ObjectiveError, tmp_path / "runs", 1000.0, 8)
    objective = page_objective("calm-sea", "passages", [TOPIC, ("avoid_words", 1, '{"words": "storm"}')])
    request = TrainRequest(budget="steps", amount=2, batch_size=4, group_size=2, objective=objective.to_dict())
    snapshot = service.start_training(request, owner="me")
    try:
        assert snapshot["adapter"] == "calm-sea-pg-1" and snapshot["task"] == CUSTOM_TASK
        job = service.job
        written = tmp_path / "runs" / "calm-sea-pg-1" / "objective.json"
        assert job.config.run.objective == str(written)
        assert json.loads(written.read_text()) == objective.to_dict()
        assert job.config.run.target.objective == objective
        train.go.set()
        wait_until(lambda: finished == ["calm-sea-pg-1"])
    finally:
        service.training.close(10)

    # refused before anything is written: a bad budget leaves no folder behind
    with pytest.raises(Exception, match="budget in steps"):
        service.start_training(TrainRequest(budget="steps", amount=0, objective=objective.to_dict()), owner="other")
    assert not (tmp_path / "runs" / "calm-sea-pg-2").exists()
