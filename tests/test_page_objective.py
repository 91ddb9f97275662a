"""Your own objective from the page (app.objective_form.page_objective, TrainingService.start with an objective): the
page's blocks become one checked objective, bad ones one clear message, and the run trains on a file in its own folder.

The training loop is tests/test_training_jobs.py's fake, so these need no model; tests/test_app_api.py's
objective tests train and try one for real through the page's API."""

from __future__ import annotations

import json
import threading

import pytest

from app.config import AppConfig, ModelsConfig
from app.adapter_store import AdapterStore
from app.config import ServiceError
from app.objective_form import page_objective, pasted_prompts, uploaded_prompts
from app.training_jobs import TrainingQueue, TrainRequest
from app.training_service import TrainingService
from ipa.rewards.objective import ObjectiveError
from ipa.tasks.objective import CUSTOM_TASK
from tests.test_training_jobs import FakeTrain, wait_until

TOPIC = ("topic", 2, '{"topic": "the ocean and the sea"}')
HARBOUR = "\n".join(f"The harbour was quiet on day {i} and" for i in range(12))
"""Twelve prompts: nine fall in ipa.tasks.data's training part, three are held back."""


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


@pytest.mark.parametrize("text, message", [
    ("a\nb\n\n", "2 prompts pasted: give at least 10, one a line"),
    ("x" * 300 * 1024, "the page takes at most 256 KB"),
    ("a\n" * 2001, "2,001 prompts were pasted; the page takes at most 2,000"),
    ("ok\n" * 10 + "y" * 2001, "Pasted prompt 11 is longer than 2,000 characters"),
])
def test_pasted_prompts_have_limits_and_say_which(text, message):
    with pytest.raises(ServiceError, match=message):
        pasted_prompts(text, 2000)


def playground_without_models(tmp_path, train) -> tuple[TrainingService, list]:
    config, finished = AppConfig(runs_dir=str(tmp_path / "runs"), models=ModelsConfig(device="cpu")), []
    store = AdapterStore(config, None, threading.Lock())  # no models: an empty store
    queue = TrainingQueue(train, lambda job, directory: finished.append(job.name), lambda name: None,
                          ObjectiveError, tmp_path / "runs", 1000.0, 8)
    return TrainingService(config, store, "cpu", queue=queue), finished


def test_an_objective_run_trains_on_the_objective_written_into_its_own_folder(tmp_path):
    train = FakeTrain()
    training, finished = playground_without_models(tmp_path, train)
    objective = page_objective("calm-sea", "passages", [TOPIC, ("avoid_words", 1, '{"words": "storm"}')])
    request = TrainRequest(budget="steps", amount=2, batch_size=4, group_size=2, objective=objective.to_dict())
    snapshot = training.start(request, owner="me")
    try:
        assert snapshot["adapter"] == "calm-sea-pg-1" and snapshot["task"] == CUSTOM_TASK
        job = training.job
        written = tmp_path / "runs" / "calm-sea-pg-1" / "objective.json"
        assert job.config.run.objective == str(written)
        assert json.loads(written.read_text()) == objective.to_dict()
        assert job.config.run.target.objective == objective
        # a run cancelled while it waits leaves nothing behind
        training.start(request, owner="other")
        assert (tmp_path / "runs" / "calm-sea-pg-2" / "objective.json").is_file()
        assert training.stop(owner="other")["state"] == "cancelled"
        assert not (tmp_path / "runs" / "calm-sea-pg-2").exists()
        train.go.set()
        wait_until(lambda: finished == ["calm-sea-pg-1"])
    finally:
        training.close(10)

    # refused before anything is written: a bad budget leaves no folder behind
    with pytest.raises(Exception, match="budget in steps"):
        training.start(TrainRequest(budget="steps", amount=0, objective=objective.to_dict()), owner="other")
    assert not (tmp_path / "runs" / "calm-sea-pg-2").exists()


def test_pasted_prompts_are_written_beside_the_objective_and_train_it(tmp_path):
    training, _ = playground_without_models(tmp_path, FakeTrain())
    objective = page_objective("calm-sea", "passages", [TOPIC]).to_dict()
    try:
        training.start(TrainRequest(budget="steps", amount=1, batch_size=4, group_size=2, objective=objective,
                                            prompts_text=HARBOUR + "\n\n"), owner="me")
        run = tmp_path / "runs" / "calm-sea-pg-1"
        assert (run / "prompts.txt").read_text().splitlines() == HARBOUR.splitlines()
        assert json.loads((run / "objective.json").read_text())["prompts"] == "prompts.txt"
        target = training.job.config.run.target
        assert sorted(x["text"] for x in target.inputs("all")) == sorted(HARBOUR.splitlines())
        assert len(target.inputs("eval")) == 3
    finally:
        training.close(10)

    # prompts that all fall in one part of the split: refused, the folder removed, no server path in the message
    few = "\n".join(f"The harbour was quiet on day {i} and" for i in (0, 2, 3, 5, 6, 7, 9, 10, 11, 12) if i not in (1, 4, 8))
    with pytest.raises(ServiceError) as caught:
        training.start(TrainRequest(objective=objective, prompts_text=few), owner="other")
    assert str(caught.value).startswith("Your pasted prompts: none of its prompts fell in the eval part")
    assert str(tmp_path) not in str(caught.value) and not (tmp_path / "runs" / "calm-sea-pg-2").exists()
    with pytest.raises(ServiceError, match="Pasted prompts are for your own objective"):
        training.start(TrainRequest(prompts_text=HARBOUR), owner="other")


def test_the_reward_curve_shows_each_block_of_the_objective(tmp_path):
    from app.views import reward_curves
    from tests.test_training_jobs import job

    run = job(tmp_path, "calm-sea-pg-1", "me")
    for step, (sentiment, topic) in enumerate([(0.5, 0.2), (0.6, 0.4)], 1):  # as ipa.training.loop reports a step
        run.on_event({"type": "step", "step": step, "reward": (sentiment * topic) ** 0.5, "kl": 0.01, "elapsed": step,
                      "reward_sentiment": sentiment, "reward_topic": topic, "reward_std": 0.1, "total_steps": 3})
    frame = reward_curves(run.snapshot())
    assert frame[frame.step == 2].set_index("series").value.round(2).to_dict() == {"reward": 0.49, "sentiment": 0.6,
                                                                                   "topic": 0.4, "reward, smoothed": 0.4}


def prompts_file(tmp_path, name: str, content: str | bytes) -> str:
    path = tmp_path / "upload" / name  # where the page's upload widget would have stored it
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def test_an_uploaded_prompts_file_is_read_as_tasks_data_reads_it(tmp_path):
    rows = [json.dumps({"text": "The tide 0"}), json.dumps({"prompt": {"text": "The tide 1"}}), json.dumps("The tide 2"),
            *(json.dumps({"prompt": f"The tide {i}"}) for i in range(3, 10)), ""]
    assert uploaded_prompts(prompts_file(tmp_path, "sea.jsonl", "\n".join(rows)), 2000) == [f"The tide {i}" for i in range(10)]
    text = "\ufeff" + HARBOUR.replace("\n", "\r\n\n")  # a byte-order mark, Windows line ends, blank lines
    assert uploaded_prompts(prompts_file(tmp_path, "harbour.txt", text), 2000) == HARBOUR.splitlines()


TEN = "\n".join(f'{{"text": "The tide {i}"}}' for i in range(10))


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", "", "empty.txt is empty: give at least 10 prompts, one a line"),
    ("blank.jsonl", "\n  \n", "blank.jsonl is empty"),
    ("picture.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "picture.txt is not a text file (byte 0 is not text)"),
    ("nul.txt", "The tide\x00\x00 rose", "nul.txt is not a text file (byte 8 is not text)"),
    ("latin1.txt", "The caf\xe9 by the sea\n".encode("latin-1"), "latin1.txt is not a text file (byte 7 is not text)"),
    ("many.txt", "The tide\n" * 2001, "many.txt holds 2,001 lines; the page takes at most 2,000 prompts"),
    ("big.txt", "x" * 257 * 1024, "big.txt is 257 KB; the page takes prompts files of at most 256 KB"),
    ("bad.jsonl", TEN.replace('"The tide 3"}', '"The tide 3"'), "bad.jsonl, line 4: not valid JSON (Expecting ',' delimiter)"),
    ("rows.jsonl", TEN + '\n{"label": 1}', 'rows.jsonl, line 11: no prompt in this row; give each row a text, such as {"text"'),
    ("few.jsonl", TEN.split("\n", 3)[3], "few.jsonl holds 7 prompts: give at least 10 (one in five is held back"),
    ("long.txt", "ok\n" * 10 + "y" * 2001, "long.txt: the prompt on line 11 is longer than 2,000 characters: shorten it"),
    ("prompts.csv", "a,b\n", "prompts.csv is not a prompts file the page takes: upload a .txt (one prompt a line) or a .jsonl"),
])
def test_a_bad_prompts_file_is_one_message_naming_the_file_and_line(tmp_path, name, content, message):
    path = prompts_file(tmp_path, name, content)
    with pytest.raises(ServiceError) as caught:
        uploaded_prompts(path, 2000)
    assert str(caught.value).startswith(message) and str(tmp_path) not in str(caught.value)


def test_uploaded_prompts_train_the_objective_from_the_run_folder(tmp_path):
    training, _ = playground_without_models(tmp_path, FakeTrain())
    objective = page_objective("calm-sea", "passages", [TOPIC]).to_dict()
    rows = [json.dumps({"text": f"The harbour was quiet on day {i}\nand"}) for i in range(12)]  # prompts of two lines
    upload = prompts_file(tmp_path, "harbour.jsonl", "\n".join(rows))
    try:
        training.start(TrainRequest(budget="steps", amount=1, batch_size=4, group_size=2, objective=objective,
                                            prompts_file=upload), owner="me")
        run = tmp_path / "runs" / "calm-sea-pg-1"
        assert json.loads((run / "objective.json").read_text())["prompts"] == "prompts.jsonl"
        target = training.job.config.run.target
        assert sorted(x["text"] for x in target.inputs("all")) == sorted(json.loads(r)["text"] for r in rows)
    finally:
        training.close(10)
    with pytest.raises(ServiceError, match="Paste prompts or upload a file of them, not both"):
        training.start(TrainRequest(objective=objective, prompts_text=HARBOUR, prompts_file=upload), owner="other")
    with pytest.raises(ServiceError, match="Uploaded prompts are for your own objective"):
        training.start(TrainRequest(prompts_file=upload), owner="other")
    few = prompts_file(tmp_path, "few.txt", "\n".join(f"The harbour was quiet on day {i} and" for i in (0, 2, 3, 5, 6, 7, 9, 10, 11, 12)))
    with pytest.raises(ServiceError) as caught:
        training.start(TrainRequest(objective=objective, prompts_file=few), owner="other")
    assert str(caught.value).startswith("Your uploaded prompts (few.txt): none of its prompts fell in the eval part")
    assert str(tmp_path / "runs") not in str(caught.value) and not (tmp_path / "runs" / "calm-sea-pg-2").exists()
