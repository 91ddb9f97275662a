"""A class training at once (issue 21): twenty browser sessions start runs together through the page's API, ten of one
task and ten of one objective. Every run gets its own name and folder when it is queued, each finishes, each
adapter downloads with the weights its own run saved, nothing is written over, and the page serves throughout."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import zipfile

import pytest
from gradio_client import Client

from tests.app_server import serve_playground

pytestmark = pytest.mark.slow
SESSIONS = 20
TINY = dict(algo="pg", budget="steps", amount=1, alpha=1.0, batch_size=2, group_size=2, max_new_tokens=4,
            eval_prompts=1)
OBJECTIVE = dict(name="calm-class", prompts="passages", block_1="length", weight_1=1.0, params_1='{"target": 3}',
                 block_2="avoid_words", weight_2=1.0, params_2='{"words": "storm"}', block_3="none", weight_3=1.0,
                 params_3="", task="toxicity", prompt_lines="", **TINY)


@pytest.fixture(scope="module")
def app(tmp_path_factory, request):
    with serve_playground(tmp_path_factory.mktemp("class"), lambda: request.getfixturevalue("embedded_host")) as served:
        yield served


def lr_of(session: int) -> float:
    """Each session's own learning rate, so that its adapter's weights and card are its own."""
    return round(1e-3 + session * 1e-4, 6)


def start(client: Client, session: int) -> None:
    if session % 2:
        client.predict(**{**OBJECTIVE, "lr": lr_of(session)}, api_name="/train_objective")
    else:
        client.predict(task="toxicity", lr=lr_of(session), **TINY, api_name="/train_start")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_twenty_sessions_training_at_once_each_get_their_own_run_and_adapter(app):
    clients = [Client(app.url, verbose=False) for _ in range(SESSIONS)]
    barrier, errors = threading.Barrier(SESSIONS), []

    def session(i):
        barrier.wait()
        try:
            start(clients[i], i)
        except Exception as err:  # noqa: BLE001 - collected and reported below
            errors.append((i, err))

    threads = [threading.Thread(target=session, args=(i,)) for i in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []

    names = [c.predict(api_name="/train_status")["adapter"] for c in clients]
    assert len(set(names)) == SESSIONS  # reserved when queued: no two runs share a name
    assert all((app.runs_dir / name).is_dir() for name in names)  # ... nor a folder
    assert sorted(n for n in names if n.startswith("toxicity-pg-")) == sorted(f"toxicity-pg-{k}" for k in range(1, 11))

    deadline, served = time.monotonic() + 900, 0
    while True:
        states = [c.predict(api_name="/train_status") for c in clients]
        assert not [s["error"] for s in states if s["error"]]
        if all(s["state"] == "done" for s in states):
            break
        assert time.monotonic() < deadline, [s["phase"] for s in states]
        base, *_ = clients[0].predict(text="The harbour was", adapter="none", max_new_tokens=4, seed=0,
                                      api_name="/generate_sentiment")
        served += bool(base.strip())  # the page keeps serving while the class's runs train
        time.sleep(2)
    assert served >= 1

    for i, (client, name) in enumerate(zip(clients, names)):
        run = app.runs_dir / name
        assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
        saved = (run / "adapter" / "adapter_model.safetensors").read_bytes()
        with zipfile.ZipFile(client.predict(name, api_name="/adapter_download")) as zipped:
            weights = next(n for n in zipped.namelist() if n.endswith("adapter_model.safetensors"))
            card = json.loads(zipped.read(next(n for n in zipped.namelist() if n.endswith("card.json"))))
            assert sha(zipped.read(weights)) == sha(saved), name
        assert card["training"]["algo"]["lr"] == pytest.approx(lr_of(i)), name  # its own run's, not a neighbour's
        assert card["task"] == ("custom" if i % 2 else "toxicity")
