"""Adapters as zips (app/adapter_files.py) and the service's download, delete and upload, on a tiny model: a zip made
by the project round-trips; a pickle, a path outside its folder, a wrong base, an oversized or broken zip is refused
with one message; shipped adapters are never deleted."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from adapters.policy_adapter import AdapterCard
from app import adapter_files
from app.adapter_files import AdapterZipError, unpack_adapter_zip
from app.config import AppConfig
from app.service import UPLOADED, Playground, ServiceError


@pytest.fixture
def service(tiny_host, tmp_path):
    shipped = tmp_path / "shipped"
    tiny_host.new_adapter("made", AdapterCard(task="sentiment", algorithm="pg", steps=3))
    tiny_host.save_adapter("made", shipped / "sentiment")
    tiny_host.delete_adapter("made")
    config = AppConfig(adapters_dir=str(shipped), runs_dir=str(tmp_path / "runs"), device="cpu", warm_up=False)
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
