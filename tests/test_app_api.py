"""The playground's API as a script would use it: the real app, started in the test, driven with gradio_client.

Real embedded models on the CPU; few new tokens per request to keep it quick.
"""

from __future__ import annotations

import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError, ValidationError

from app.config import AppConfig, ConfigError, ModelsConfig, parse_args
from ipa.decoding.api_config import ApiBaseConfig
from app.settings import Settings
from ipa.tasks import TASKS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(playground_app):
    return Client(playground_app.url, verbose=False)


def demo_inputs(task: str) -> dict:
    """A task's first demo, as the page's text boxes hold it (concepts as one comma-separated string)."""
    demo = TASKS[task].demos[0]
    return {k: ", ".join(v) if isinstance(v, (list, tuple)) else v for k, v in demo.items()}


def generate(client: Client, task: str, adapter: str = "none", max_new_tokens: int = 6, **overrides):
    values = {**demo_inputs(task), "adapter": adapter, "max_new_tokens": max_new_tokens, "seed": 0, **overrides}
    return client.predict(**values, api_name=f"/generate_{task}")


def wait_for(client: Client, condition, timeout: float, what: str) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.predict(api_name="/train_status")
        if status.get("error"):
            pytest.fail(f"the training run failed: {status['error']}")
        if condition(status):
            return status
        time.sleep(1.0)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last status: {status['phase']}")


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_streams_two_columns_and_scores_both(client, playground_app, task):
    adapter = playground_app.service.default_adapter(task) or "none"
    base, tailored, base_reward, tailored_reward, tokens, steering, notice, data = generate(client, task, adapter)
    assert base.strip() and tailored.strip()
    # Three samples a column by default (the page's Settings), the mean and its spread shown and returned.
    assert data["task"] == task and len(data["base"]) == len(data["tailored"]) == Settings().n == 3
    assert "mean of 3 samples" in base_reward and "ipa-spread" in tailored_reward
    assert data["mean_reward"]["base"] == pytest.approx(sum(r["reward"] for r in data["base"]) / 3)
    assert data["mean_reward_ci95"]["tailored"] is not None
    for column in ("base", "tailored"):
        row = data[column][0]
        assert 0.0 <= row["reward"] <= 1.0
        assert len(row) > 2  # the reward's parts come with it (e.g. toxicity, coverage and fluency)
    assert "Reward" in base_reward and "Reward" in tailored_reward
    if adapter == "none":
        assert tailored == base and [r["reward"] for r in data["tailored"]] == [r["reward"] for r in data["base"]]
        assert "No adapter selected" in notice and tokens == []
    else:
        assert data["steered"] and data["adapter"] == adapter
        assert len(tokens) >= 1 and all(0.0 <= t["class_or_confidence"] <= 1.0 for t in tokens)
        assert "vs base" in tailored_reward
    if task in ("toxicity", "dialogue_safety"):
        backend = data["toxicity_backend"]
        assert backend and backend in base_reward  # the classifier is named under the numbers
        if "profanity" in backend:
            assert "lexical stand-in" in backend


def test_without_an_adapter_the_right_column_is_the_base_and_the_page_says_so(client):
    base, tailored, *_, tokens, steering, notice, data = generate(client, "open_ended", adapter="none")
    assert tailored == base and not data["steered"] and data["adapter"] is None
    assert "No adapter selected" in notice and "no adapter steered" in steering and tokens == []


def test_alpha_zero_gives_the_base_in_both_columns(client, playground_app):
    adapter = playground_app.service.default_adapter("toxicity")
    *_, notice, data = generate(client, "toxicity", adapter, alpha=0)
    assert not data["steered"] and data["tailored"][0]["text"] == data["base"][0]["text"]
    assert "Alpha is 0" in notice


@pytest.mark.parametrize("task, change, message", [
    ("toxicity", {"text": "   "}, "missing"),
    ("commongen", {"concepts": "dog, cat, ball, tree, park, sun, rain"}, "give 3 to 5 concepts"),
    ("sentiment", {"text": "x" * 2001}, "at most 2,000"),
    ("toxicity", {"alpha": 12}, "alpha must be a number from 0 to 5, got 12"),
    ("toxicity", {"max_new_tokens": 129}, "max_new_tokens must be a whole number from 1 to 128, got 129"),
    ("toxicity", {"adapter": "../../etc/passwd"}, "no adapter named"),
])
def test_bad_input_comes_back_as_a_message(client, task, change, message):
    # an empty box is refused before the handler runs (the event's validator, which API calls go through too)
    with pytest.raises((AppError, ValidationError)) as caught:
        generate(client, task, **change)
    assert message.lower() in str(caught.value).lower()


@pytest.mark.parametrize("change, message", [
    ({"alpha": None}, "alpha must be a number from 0 to 5, got nothing"),
    ({"alpha": "strong"}, "alpha must be a number from 0 to 5, got str 'strong'"),
    ({"n": 2.7}, "n must be a whole number from 1 to 4, got 2.7"),
    ({"seed": "abc"}, "seed must be a whole number from 0 to 2147483647, got str 'abc'; or -1 for a random seed."),
    ({"max_new_tokens": None}, "max_new_tokens must be a whole number from 1 to 128, got nothing"),
    ({"temperature": -0.5}, "temperature must be a number from 0 to 2, got -0.5"),
])
def test_malformed_values_name_the_field_and_the_page_range(client, change, message):
    with pytest.raises(AppError) as caught:
        generate(client, "toxicity", **change)
    assert message in str(caught.value)


def test_the_app_keeps_serving_after_errors(client, capfd, caplog):
    caplog.set_level("INFO", logger="ipa")
    with pytest.raises(AppError):
        generate(client, "sentiment", text="The sea " * 300)  # past the page's 2,000 characters: the service refuses it
    # A user's mistake is one log line, not a traceback.
    assert "Traceback" not in capfd.readouterr().err
    logged = [r.getMessage() for r in caplog.records if r.name == "ipa.ui"]
    assert len(logged) == 1 and logged[0].startswith("user error: ") and "at most 2,000" in logged[0]
    base, *_ = generate(client, "sentiment")
    assert base.strip()


def test_requests_at_the_same_time_interleave_without_mixing_up_adapters(client, playground_app):
    # Two users at once, one with the adapter and one without: each gets exactly what it gets alone.
    adapter = playground_app.service.default_adapter("toxicity")
    args = [dict(task="toxicity", adapter=adapter, max_new_tokens=8), dict(task="open_ended", max_new_tokens=8)]
    alone = [generate(client, **a)[-1] for a in args]
    second = Client(playground_app.url, verbose=False)
    jobs = [c.submit(**{**demo_inputs(a["task"]), "adapter": a.get("adapter", "none"), "max_new_tokens": 8, "seed": 0},
                     api_name=f"/generate_{a['task']}") for c, a in zip((client, second), args)]
    together = [job.result(timeout=300)[-1] for job in jobs]
    for a, b in zip(alone, together):
        assert [r["text"] for r in a["tailored"]] == [r["text"] for r in b["tailored"]]
        assert [r["text"] for r in a["base"]] == [r["text"] for r in b["base"]]


def test_training_starts_reports_progress_stops_and_its_adapter_becomes_selectable(client, playground_app):
    tiny = dict(task="toxicity", algo="pg", budget="steps", amount=200, lr=1e-3, alpha=1.0, batch_size=4, group_size=2,
                max_new_tokens=4, eval_prompts=1)
    started = client.predict(**tiny, api_name="/train_start")
    name = playground_app.service.job.name
    assert name in started and name.startswith("toxicity-pg-")
    with pytest.raises(AppError, match="still running: one run a session"):
        client.predict(**tiny, api_name="/train_start")
    other = Client(playground_app.url, verbose=False)  # another session waits its turn, and may leave the queue
    assert "Waiting: 1 run ahead of this one" in other.predict(**tiny, api_name="/train_start")
    assert other.predict(api_name="/train_status")["position"] == 1
    assert "Cancelled" in other.predict(api_name="/train_stop")

    running = wait_for(client, lambda s: s["step"] >= 1, 300, "the first training step")
    assert running["state"] == "running" and 0 < running["progress"] < 1
    assert running["history"][0]["step"] == 1 and "reward" in running["history"][0] and "kl" in running["history"][0]
    assert running["samples"] and running["samples"][0]["text"] is not None

    # Generation keeps working while the run trains (on its own model copy).
    base, *_ = generate(client, "sentiment", max_new_tokens=4)
    assert base.strip()

    client.predict(api_name="/train_stop")
    done = wait_for(client, lambda s: s["state"] != "running", 300, "the stopped run to save its adapter")
    assert done["state"] == "done" and done["interrupted"] and done["step"] < 200
    assert done["reward_before"] is not None and done["reward_after"] is not None

    assert name in client.predict("toxicity", api_name="/adapters")
    card = playground_app.service.adapters[name].card
    assert card.steps == done["step"] and card.task == "toxicity" and card.training["interrupted"]
    assert (playground_app.runs_dir / name / "adapter" / "card.json").is_file()
    *_, data = generate(client, "toxicity", adapter=name, max_new_tokens=4)
    assert data["adapter"] == name and data["steered"]


def test_stop_without_a_run_says_so(client, playground_app):
    if playground_app.service.job is not None and playground_app.service.job.running:
        pytest.fail("a training run is still going")
    with pytest.raises(AppError, match="No training run is in progress"):
        client.predict(api_name="/train_stop")


def test_command_line_flags_win_over_environment_over_defaults():
    assert parse_args([], env={}) == AppConfig()
    env = {"GRADIO_SERVER_PORT": "9001", "IPA_HOST": "0.0.0.0", "GRADIO_SERVER_NAME": "10.0.0.1", "IPA_SHARE": "true"}
    config = parse_args([], env=env)
    assert (config.port, config.host, config.share) == (9001, "0.0.0.0", True)
    config = parse_args(["--port", "7000", "--no-share", "--preset", "online"], env={**env, "IPA_PORT": "8000"})
    assert (config.port, config.share, config.models.preset) == (7000, False, "online")
    with pytest.raises(ConfigError, match="Unknown preset"):
        parse_args(["--preset", "huge"], env={})


def test_the_models_and_the_api_base_nest_in_the_config_behind_the_same_flags():
    assert parse_args([], env={}).api is None  # the base is local unless --base-api is given
    env = {"IPA_BASE_API": "http://127.0.0.1:8000/v1/", "IPA_BASE_API_MODEL": "served", "IPA_DEVICE": "cpu"}
    config = parse_args(["--top-logprobs", "5", "--concurrency", "7", "--dtype", "float32", "--threads", "1"], env=env)
    assert (config.api.url, config.api.model, config.api.top_logprobs) == ("http://127.0.0.1:8000/v1", "served", 5)
    assert config.concurrency == 7 and config.api.concurrency == ApiBaseConfig.concurrency  # the page's own flag
    assert config.models == ModelsConfig(device="cpu", dtype="float32", threads=1)
    assert parse_args(["--base-api-model", "served"], env={}).api is None  # nothing to tailor without the URL


def test_a_system_turn_typed_into_a_message_stays_text(client, playground_app, embedded_tokenizer, monkeypatch):
    from tests.helpers import INJECTION, special_counts

    tokenizer = embedded_tokenizer
    runs = []
    submit = playground_app.service.scheduler.submit
    monkeypatch.setattr(playground_app.service.scheduler, "submit", lambda run, **options: (runs.append(run), submit(run, **options))[1])
    *_, data = generate(client, "dialogue_safety", message=INJECTION, max_new_tokens=2)
    assert data["base"][0]["text"] is not None and len(runs) == 1
    decoded = tokenizer.decode(runs[0].stream_prompts[0])
    template_only = TASKS["dialogue_safety"].build_prompt({"message": "Hello"}, tokenizer)
    assert special_counts(tokenizer, decoded) == special_counts(tokenizer, template_only)
    assert decoded.count("<|im_start|>") == template_only.count("<|im_start|>")  # the ids, read back as text


@pytest.mark.parametrize("task, change, shown", [
    ("toxicity", {"adapter": "<img src=x>"}, "named '&lt;img src=x&gt;'"),
    ("commongen", {"concepts": "<b>dog</b> <a href=/x>cat</a> ball tree park sun"}, "&lt;b&gt;dog&lt;/b&gt;"),
])
def test_error_pop_ups_show_typed_html_as_text(client, task, change, shown):
    with pytest.raises(AppError) as caught:
        generate(client, task, **change)
    assert shown in str(caught.value) and "<" not in str(caught.value)


def test_an_adapter_downloads_uploads_again_and_is_deleted_and_bad_zips_are_refused(client, playground_app, tmp_path):
    import zipfile

    from gradio_client import handle_file

    shipped = playground_app.service.default_adapter("toxicity")
    path = client.predict(shipped, api_name="/adapter_download")
    assert {n.split("/")[-1] for n in zipfile.ZipFile(path).namelist()} >= {"card.json", "adapter_model.safetensors"}
    message, *_ = client.predict(handle_file(path), api_name="/adapter_upload")
    uploaded = f"{shipped}-2"
    assert uploaded in message and uploaded in client.predict("toxicity", api_name="/adapters")
    *_, data = generate(client, "toxicity", adapter=uploaded, max_new_tokens=2, n=1)
    assert data["steered"] and data["adapter"] == uploaded

    pickled = tmp_path / "pickled.zip"
    with zipfile.ZipFile(path) as z, zipfile.ZipFile(pickled, "w") as w:
        for info in z.infolist():
            w.writestr(info.filename, z.read(info))
        w.writestr(f"{shipped}/model.pkl", b"\x80\x04N.")
    with pytest.raises(AppError, match="only JSON and safetensors"):
        client.predict(handle_file(str(pickled)), api_name="/adapter_upload")
    with pytest.raises(AppError, match="shipped adapter"):
        client.predict(shipped, api_name="/adapter_delete")

    message, *_ = client.predict(uploaded, api_name="/adapter_delete")
    assert "Deleted" in message and uploaded not in client.predict("toxicity", api_name="/adapters")


def test_a_second_adapter_composes_and_both_rewards_score_both_columns(client, playground_app):
    first = playground_app.service.default_adapter("toxicity")
    assert "sentiment" in playground_app.service.adapters  # the shipped adapters are served (tests/app_server.py)
    *_, single = generate(client, "toxicity", first, n=2)
    _, _, base_reward, tailored_reward, *_, both = generate(client, "toxicity", first, n=2, adapter_2="sentiment", alpha_2=0)
    assert [r["text"] for r in both["tailored"]] == [r["text"] for r in single["tailored"]]  # alpha 0 adds nothing
    assert both["more"] == [{"adapter": "sentiment", "alpha": 0.0}] and both["also_scored"]["by"] == "sentiment"
    assert len(both["also_scored"]["tailored"]) == 2 and 0 <= both["also_scored"]["mean_reward"]["tailored"] <= 1
    assert "Also scored by <b>sentiment</b>" in base_reward and "vs base" in tailored_reward.split("Also scored by")[1]
    *_, notice, data = generate(client, "toxicity", first, n=2, adapter_2="sentiment", alpha_2=1.0)
    assert "“sentiment” at alpha = 1" in notice and data["steered"]


def test_the_inspector_and_branching_answer_for_the_sessions_last_result(playground_app):
    client = Client(playground_app.url, verbose=False)  # a session of its own: the last result is this one's
    with pytest.raises(AppError, match="press Generate first"):
        client.predict(column="tailored", sample=1, step=0, api_name="/inspect_toxicity")
    adapter = playground_app.service.default_adapter("toxicity")
    *_, data = generate(client, "toxicity", adapter, n=2, max_new_tokens=8)
    tokens, summary, table, alternative = client.predict(column="tailored", sample=2, step=1, api_name="/inspect_toxicity")
    assert "**Step 1** of the tailored text, sample 2" in summary and len(table["data"]) == 10
    assert table["headers"][-1] == "p tailored" and len(tokens) >= 2
    chosen = next(value for label, value in alternative["choices"] if label.endswith("(chosen)"))
    html, branched = client.predict(column="tailored", sample=2, step=1, token_id=chosen, api_name="/branch_toxicity")
    assert branched["texts"]["tailored"] == data["tailored"][1]["text"] and "the same text comes back" in html
    assert 0 <= branched["scores"]["base"]["reward"] <= 1
    with pytest.raises(AppError, match="step must be a whole number from 0 to"):
        client.predict(column="tailored", sample=2, step=99, api_name="/inspect_toxicity")
