"""Adapters as zips (app/adapter_files.py) and the service's download, delete and upload, on a tiny model: a zip made
by the project round-trips; a pickle, a path outside its folder, a wrong base, an oversized or broken zip is refused
with one message; shipped adapters are never deleted; a card.json fuzzed field by field is refused or shown as text,
never rendered; and nothing the playground hands out (messages, statuses, zips) names a path of the server."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import zipfile
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from ipa.policy_adapter import AdapterCard, AdapterHost
from app import adapter_files
from app.adapter_files import AdapterZipError, unpack_adapter_zip
from app.config import REPO_ROOT, AppConfig, ModelsConfig
from app.adapter_store import UPLOAD_MARK, UPLOADED
from app.config import ServiceError
from app.service import Playground
from app.training_jobs import TrainRequest
from app.views import card_markdown, error_text
from ipa.tasks import TASKS
from tests.helpers import tiny_llama
from tests.test_views import TEXT_TAGS, rendered, shows_as_text


@pytest.fixture
def service(tiny_host, tmp_path):
    shipped = tmp_path / "shipped"
    tiny_host.new_adapter("made", AdapterCard(task="sentiment", algorithm="pg", steps=3))
    tiny_host.save_adapter("made", shipped / "sentiment")
    tiny_host.delete_adapter("made")
    config = AppConfig(adapters_dir=str(shipped), runs_dir=str(tmp_path / "runs"), models=ModelsConfig(device="cpu"),
                       warm_up=False)
    playground = Playground(config, tiny_host, tiny_host, {}, torch.device("cpu"))
    playground.load_known_adapters()
    yield playground
    playground.close()


def rezip(source: Path, out: Path, change: dict | None = None, extra: dict | None = None) -> Path:
    """A copy of an adapter zip with some files replaced (name -> bytes, or None to leave one out) or added."""
    with zipfile.ZipFile(source) as z, zipfile.ZipFile(out, "w") as w:
        for info in z.infolist():
            name = info.filename.split("/")[-1]
            if change and name in change:
                if change[name] is not None:
                    w.writestr(info.filename, change[name])
            else:
                w.writestr(info.filename, z.read(info))
        for name, data in (extra or {}).items():
            w.writestr(name, data)
    return out


def test_a_downloaded_adapter_uploads_again_under_a_new_name_and_can_be_deleted(service, tmp_path):
    path = service.adapter_zip("sentiment", tmp_path / "zips")
    assert sorted(n.split("/")[1] for n in zipfile.ZipFile(path).namelist()) == sorted(adapter_files.REQUIRED_FILES)
    entry = service.upload_adapter(path)
    assert entry.name == "sentiment-2" and entry.source == UPLOADED and entry.card.steps == 3
    assert entry.name in service.adapter_host.cards and entry in service.adapters_for("sentiment")
    service.delete_adapter(entry.name)
    assert entry.name not in service.adapters and not (Path(service.config.runs_dir) / entry.name).exists()
    with pytest.raises(ServiceError, match="shipped adapter"):
        service.delete_adapter("sentiment")


@pytest.mark.parametrize("change, extra, message", [
    ({}, {"sentiment/model.pkl": b"\x80\x04N."}, "only JSON and safetensors files"),
    ({}, {"../../evil.json": b"{}"}, "a path outside its folder"),
    ({}, {"/etc/evil.json": b"{}"}, "a path outside its folder"),
    ({"card.json": None}, {}, "no card.json"),
    ({"card.json": b"[1, 2]"}, {}, "card"),
    ({"adapter_model.safetensors": b"not tensors"}, {}, "the zip holds a corrupt adapter"),
])
def test_a_bad_zip_is_refused_with_one_message_and_leaves_nothing(service, tmp_path, change, extra, message):
    good = service.adapter_zip("sentiment", tmp_path / "zips")
    bad = rezip(good, tmp_path / "bad.zip", change, extra)
    before = set(service.adapters)
    with pytest.raises(AdapterZipError, match="refused") as caught:
        service.upload_adapter(bad)
    assert message.lower() in str(caught.value).lower() and service.config.runs_dir not in str(caught.value)
    assert set(service.adapters) == before and not any(Path(service.config.runs_dir).glob("bad*"))


def test_an_adapter_for_another_base_is_refused(service, tmp_path):
    good = service.adapter_zip("sentiment", tmp_path / "zips")
    card = json.loads(zipfile.ZipFile(good).read("sentiment/card.json"))
    for key, value, message in [("base_model", "HuggingFaceTB/SmolLM2-1.7B-Instruct", "trained to steer"),
                                ("init_fingerprint", {**card["init_fingerprint"], "hidden_size": 2048}, "was made for")]:
        bad = rezip(good, tmp_path / "other.zip", {"card.json": json.dumps({**card, key: value}).encode()})
        with pytest.raises(AdapterZipError, match=message):
            service.upload_adapter(bad)


def test_size_limits_and_non_zips(service, tmp_path, monkeypatch):
    good = service.adapter_zip("sentiment", tmp_path / "zips")
    monkeypatch.setattr(adapter_files, "MAX_ZIP_MB", 0.001)
    with pytest.raises(AdapterZipError, match="up to 0.001 MB"):
        unpack_adapter_zip(good, tmp_path / "x")
    monkeypatch.setattr(adapter_files, "MAX_ZIP_MB", 64)
    monkeypatch.setattr(adapter_files, "MAX_UNPACKED_MB", 0.001)
    with pytest.raises(AdapterZipError, match="unpacks to"):
        unpack_adapter_zip(good, tmp_path / "y")
    text = tmp_path / "notes.zip"
    text.write_text("hello")
    with pytest.raises(AdapterZipError, match="not a zip archive"):
        unpack_adapter_zip(text, tmp_path / "z")


def test_uploads_follow_the_training_access_rule(service, tmp_path):
    path = service.adapter_zip("sentiment", tmp_path / "zips")
    service.config.training = "local"
    with pytest.raises(ServiceError, match="only a browser on the machine"):
        service.upload_adapter(path, local=False)
    service.config.training = "off"
    with pytest.raises(ServiceError, match="cannot be added or removed"):
        service.delete_adapter("sentiment")


def test_an_uploaded_adapter_reaches_every_adapter_menu_of_the_task_tabs(service, tmp_path):
    """Each tab's adapter menu lists its task's adapters and each second-adapter menu every adapter; an upload (like
    a finished training run) refreshes both kinds."""
    import gradio as gr

    from app.ui import AdapterMenus

    with gr.Blocks():
        menus = AdapterMenus({"sentiment": gr.Dropdown(), "toxicity": gr.Dropdown()}, [gr.Dropdown(), gr.Dropdown()])
    entry = service.upload_adapter(service.adapter_zip("sentiment", tmp_path / "zips"))
    sentiment, toxicity, *seconds = [[value for _, value in u["choices"]] for u in menus.updates(service)]
    assert entry.name in sentiment and entry.name not in toxicity
    assert len(seconds) == 2 and all(entry.name in s and "sentiment" in s for s in seconds)


# --- a card.json fuzzed field by field: refused, or shown as text ------------------------------------------------

SHIPPED = json.loads((REPO_ROOT / "adapters" / "trained" / "sentiment" / "card.json").read_text())
MARKUP = ("<img src=https://evil.example/x.png><a href=https://evil.example/login>Log in again to keep your adapters</a>"
          " [Log in](https://evil.example) ![x](https://evil.example/y.png) **bold** `code` $$x$$ www.evil.example")
"""The issue's card (its algorithm), and Markdown's ways to a link, an image, emphasis, code and math."""
HUGE = "x" * 100_000
STRINGS = [f.name for f in fields(AdapterCard) if f.type == "str"]
NUMBERS = [f.name for f in fields(AdapterCard) if f.type in ("int", "float")]
OBJECTS = [f.name for f in fields(AdapterCard) if f.type == "dict"]
NESTED = ["training.run.out", "training.run.objective", "evaluation.date", "evaluation.command", "evaluation.n_prompts",
          "evaluation.seed", "metrics_after.label", "metrics_after.mean_reward", "init_fingerprint.model_type",
          "objective.name"]
FUZZ = ([(field, value) for field in STRINGS + NESTED
         for value in (MARKUP, MARKUP + "\n# heading", "../../etc", "/etc/passwd", HUGE, 3, [], {}, None)]
        + [(field, value) for field in NUMBERS + NESTED[4:6] + NESTED[7:8]
           for value in (float("nan"), float("inf"), float("-inf"), -1, "1", None, True, 1e300, [1])]
        + [(field, value) for field in OBJECTS for value in ("x", [], None, {"k": float("nan")}, {"k": HUGE}, {"<b>": 1})])


def fuzzed_zip(service, tmp_path, field: str, value) -> Path:
    """The playground's own download of its adapter, its card given a shipped card's metrics and evaluation (so that
    the page shows them) and `field` (a.b.c: nested) set to `value`; NaN and infinities as JSON's NaN, Infinity."""
    good = service.adapter_zip("sentiment", tmp_path / "zips")
    card = json.loads(zipfile.ZipFile(good).read("sentiment/card.json"))
    card.update({k: SHIPPED[k] for k in ("metrics_before", "metrics_after", "evaluation", "training")})
    target, *path = field.split(".")
    holder, key = card, target
    for part in path:
        holder[key] = holder[key] if isinstance(holder.get(key), dict) else {}
        holder, key = holder[key], part
    holder[key] = value
    return rezip(good, tmp_path / "fuzzed.zip", {"card.json": json.dumps(card).encode()})


@pytest.mark.parametrize("field, value", FUZZ, ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_a_fuzzed_card_is_refused_or_shown_as_text_never_rendered(service, tmp_path, field, value):
    before = set(service.adapters)
    try:
        entry = service.upload_adapter(fuzzed_zip(service, tmp_path, field, value))
    except AdapterZipError as err:  # refused: one short message, naming no server folder, shown as text
        message = str(err)
        assert message.startswith("The adapter zip was refused: ") and len(message) < 800, message
        assert str(tmp_path) not in message and "<img" not in error_text(err)
        assert set(service.adapters) == before
        return
    card_text = card_markdown(entry, TASKS["sentiment"])
    tags, visible = rendered(card_text)
    assert tags <= TEXT_TAGS and not re.search(r"(?<!\\)://|(?i:www\.)", card_text), card_text
    if isinstance(value, str) and value in (entry.card.machine, entry.card.evaluation.get("date")):
        assert shows_as_text(card_text, value)  # shown: exactly as text
    assert len(card_text) < 10_000


@pytest.mark.parametrize("change, message", [
    ({"algorithm": MARKUP}, "Unknown algorithm '<img src=https://evil.example/x.png>"),  # the issue's card
    ({"combination": MARKUP}, "Unknown combination"),
    ({"alpha": float("nan")}, "alpha must be a number from 0 to 10, got nan"),
    ({"task": "../../etc"}, "task must be a name of 1 to 64 letters"),
    ({"task": "poetry"}, "trained for the task 'poetry', which this playground does not have"),
    ({"alpha": 8.0}, "The adapter's alpha must be a number from 0 to 5, got 8.0"),
    ({"task": "custom"}, "says task 'custom' (an objective's) but holds no objective"),
    ({"objective": {"name": "sea", "blocks": [{"reward": "sentiment"}]}}, "is for the task 'sentiment' but also holds an objective"),
    ({"task": "custom", "objective": {"name": "sea", "blocks": [{"reward": "topic", "topic": HUGE}]}},
     "objective.blocks[0].topic must be text of at most 2,000 characters, got 100,000 characters"),
    ({"task": "custom", "objective": {"name": "sea", "blocks": [{"reward": "Mine"}]}},
     "cannot be scored here: Objective 'sea' is not valid: block 1: unknown reward 'Mine'; valid rewards: toxicity"),
    ({"task": "custom", "objective": {"name": "sea", "blocks": [{"reward": "sentiment"}], "prompts": "/etc/passwd"}},
     "reads its prompts from 'passwd', outside the objective's folder"),  # an absolute path: shown by its name
    ({"task": "custom", "objective": {"name": "sea", "blocks": [{"reward": "sentiment"}], "prompts": "../../x.txt"}},
     "reads its prompts from '../../x.txt', outside the objective's folder"),
])
def test_the_issues_cards_and_what_this_playground_cannot_use_are_refused(service, tmp_path, change, message):
    good = service.adapter_zip("sentiment", tmp_path / "zips")
    card = {**json.loads(zipfile.ZipFile(good).read("sentiment/card.json")), **change}
    with pytest.raises(AdapterZipError, match="refused") as caught:
        service.upload_adapter(rezip(good, tmp_path / "bad.zip", {"card.json": json.dumps(card).encode()}))
    assert message in str(caught.value)
    assert [e.name for e in service.adapters.values()] == ["sentiment"]


def test_an_objectives_adapter_uploads_with_its_prompts_named_relative_to_it(service, tmp_path):
    good = service.adapter_zip("sentiment", tmp_path / "zips")
    objective = {"name": "sea", "blocks": [{"reward": "sentiment"}], "prompts": "runs/playground/sea-pg-1/prompts.txt"}
    card = {**json.loads(zipfile.ZipFile(good).read("sentiment/card.json")), "task": "custom", "objective": objective}
    entry = service.upload_adapter(rezip(good, tmp_path / "sea.zip", {"card.json": json.dumps(card).encode()}))
    assert entry.card.task == "custom" and service.objective_of(entry.name).name == "sea"


# --- no path of the server in anything the playground hands out ---------------------------------------------------

ABSOLUTE = re.compile(r"(?<![\w.:/~<-])/(?:[\w.@+-]+/)+[\w.@+-]*")


def server_paths(text: str, tmp_path: Path) -> list[str]:
    """The server's folders (the test's, the repository, the home folder) and any other absolute path in `text`."""
    found = [folder for folder in (str(tmp_path), str(REPO_ROOT), os.path.expanduser("~")) if folder in text]
    return found + ABSOLUTE.findall(text)


@pytest.mark.parametrize("text, shown", [
    (f"{REPO_ROOT}/runs/playground/sea-pg-4/adapter was not loaded", "runs/playground/sea-pg-4/adapter was not loaded"),
    (f"{REPO_ROOT}/data/rtp/prompts.jsonl is missing", "data/rtp/prompts.jsonl is missing"),
    (f"the objective {REPO_ROOT}/objectives/sea.json", "the objective objectives/sea.json"),
    ("/srv/space/ipa-runs/sea-pg-4/adapter is corrupt", "ipa-runs/sea-pg-4/adapter is corrupt"),  # runs_dir elsewhere
    ("No such file or directory: '/root/.cache/huggingface/x/config.json'", "No such file or directory: 'config.json'"),
    ("C:\\Users\\ann\\sea.json is missing", "sea.json is missing"),
    # what is no path of the server stays as it was
    ("see https://example.com/a/b, runs/x/adapter, ~/notes, km/h, 1/2 and </a>",
     "see https://example.com/a/b, runs/x/adapter, ~/notes, km/h, 1/2 and </a>"),
])
def test_paths_leave_the_playground_named_relative_to_its_folders(text, shown):
    from app.paths import folder_names, public_paths

    folders = folder_names([REPO_ROOT / "runs" / "playground", "/srv/space/ipa-runs", REPO_ROOT / "data"], REPO_ROOT)
    assert public_paths(text, folders) == shown


def test_no_message_status_or_downloaded_file_names_a_server_path(service, tmp_path, monkeypatch, tokenizer):
    """The issue's leaks, each made to happen: two adapters of one name, a card that does not load, a run that fails,
    a task without data, a refused upload, and a download of an adapter trained here (its card records the run's
    folder, its objective file and prompts, as ipa.training.loop writes them) and of one evaluated by ipa.evaluation.evaluate."""
    from app.ui import status_line

    runs = Path(service.config.runs_dir)
    shown = []
    # an adapter trained here, its card as a page run writes it: absolute paths of its run folder
    run = runs / "sea-pg-4"
    service.adapter_host.new_adapter("sea", AdapterCard(task="custom", algorithm="pg", steps=2, objective={
        "name": "sea", "blocks": [{"reward": "sentiment", "direction": "positive", "weight": 1.0}],
        "prompts": str(run / "prompts.txt")}))
    service.adapter_host.cards["sea"].training = {"run": {"out": str(run), "objective": str(run / "objective.json"),
                                                          "prompts": "", "init_adapter": str(runs / "old" / "adapter")},
                                                  "model": {"base": "embedded", "approx_base": str(tmp_path / "models" / "x")}}
    service.adapter_host.cards["sea"].evaluation = {"adapter": str(run / "adapter"), "command": "python -m ipa.evaluation.evaluate "
                                                    f"--adapter {run / 'adapter'} --prompts={tmp_path}/p.txt --json"}
    service.adapter_host.save_adapter("sea", run / "adapter")
    service.adapter_host.delete_adapter("sea")
    service.add_adapter("sea-pg-4", run / "adapter", "trained here")
    # at the next start: a second adapter named as a shipped one, one whose card does not load, and one uploaded before
    # this playground checked what it can use
    for name in ("sentiment", "broken", "poetry"):
        (runs / name / "adapter").mkdir(parents=True)
        for file in ("card.json", "adapter_config.json", "adapter_model.safetensors"):
            (runs / name / "adapter" / file).write_bytes((service.adapters["sentiment"].directory / file).read_bytes())
    (runs / "broken" / "adapter" / "card.json").write_text('{"task": "../../etc"}')
    poetry = json.loads((runs / "poetry" / "adapter" / "card.json").read_text())
    (runs / "poetry" / "adapter" / "card.json").write_text(json.dumps({**poetry, "task": "poetry"}))
    (runs / "poetry" / UPLOAD_MARK).write_text("")
    host = AdapterHost(tiny_llama(tokenizer), tokenizer, "tiny")
    restarted = Playground(service.config, host, host, {}, torch.device("cpu"))
    try:
        restarted.load_known_adapters()
        assert any("Two adapters are named 'sentiment'; runs/sentiment/adapter was not loaded" in p for p in restarted.problems)
        assert any("runs/broken/adapter/card.json is not a valid adapter card: task must be" in p for p in restarted.problems)
        assert any("runs/poetry/adapter: The adapter was trained for the task 'poetry'" in p for p in restarted.problems)
        assert "poetry" not in restarted.adapters and len(restarted.problems) == 3
        shown += [*restarted.problems, status_line(restarted)]
    finally:
        for name in ("sentiment", "broken", "poetry"):
            shutil.rmtree(runs / name)
        restarted.close()
    # a run that fails with its folder in the message (ipa.training.loop's own check that it can write there)
    def failing_train(config, on_event, stop, progress):
        from ipa.training.loop import _check_writable

        shutil.rmtree(config.run.out)  # the folder reserved when the run was queued, replaced by a file
        Path(config.run.out).write_text("a file where the run's folder goes")
        _check_writable(Path(config.run.out))

    service.training.queue.train = failing_train
    service.start_training(TrainRequest(budget="steps", amount=1, batch_size=4, group_size=2), owner="me")
    deadline = time.time() + 30
    while service.training_status("me")["state"] != "failed":
        assert time.time() < deadline
        time.sleep(0.02)
    status = service.training_status("me")
    assert status["error"].startswith("Cannot write to the output directory runs/toxicity-pg-")
    shown.append(json.dumps(status))
    # a task without its data on this machine
    monkeypatch.setenv("IPA_DATA_DIR", str(tmp_path / "empty-data"))
    with pytest.raises(ServiceError, match="There is no training data for this task") as caught:
        service.start_training(TrainRequest(task="sentiment", budget="steps", amount=1, batch_size=4, group_size=2), owner="you")
    shown.append(error_text(caught.value))
    # a refused upload
    with pytest.raises(AdapterZipError) as caught:
        service.upload_adapter(rezip(service.adapter_zip("sentiment", tmp_path / "zips"), tmp_path / "bad.zip",
                                     {"adapter_model.safetensors": b"not tensors"}))
    shown.append(error_text(caught.value))
    # the downloads: every file of every adapter's zip
    for name in service.adapters:
        with zipfile.ZipFile(service.adapter_zip(name, tmp_path / "downloads")) as z:
            shown += [z.read(n).decode("utf-8", errors="replace") for n in z.namelist()]
    card = json.loads(zipfile.ZipFile(tmp_path / "downloads" / "sea-pg-4.zip").read("sea-pg-4/card.json"))
    assert card["training"]["run"] == {"out": "runs/sea-pg-4", "objective": "runs/sea-pg-4/objective.json", "prompts": "",
                                       "init_adapter": "runs/old/adapter"}
    assert card["objective"]["prompts"] == "runs/sea-pg-4/prompts.txt" and card["training"]["model"]["approx_base"] == "x"
    assert card["evaluation"]["command"] == "python -m ipa.evaluation.evaluate --adapter runs/sea-pg-4/adapter --prompts=p.txt --json"
    assert shown and all(not server_paths(text, tmp_path) for text in shown), [server_paths(t, tmp_path) for t in shown]
    again = service.upload_adapter(tmp_path / "downloads" / "sea-pg-4.zip")  # a download uploads again
    assert again.card.objective["prompts"] == "runs/sea-pg-4/prompts.txt"
