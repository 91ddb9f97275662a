"""Class mode on the real app, through gradio_client as a class uses it: students join with the class code, vote blind,
the abuse the issue lists is refused (one message, nothing stored, the app serving on), the teacher sees and exports
the votes, a preference reward is learned and an adapter trained on it, the class votes on what it made, a new class
archives the old votes. And the promise behind "saved": an app killed with SIGKILL after acknowledging votes has
every one of them when it starts again.

The real MiniLM, the embedded model and a real SQLite file; generation is the page's (sentiment, 20 tokens a text)."""

from __future__ import annotations

import json
import threading

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from ipa.preferences.store import SQLiteVoteStore
from tests.app_server import serve_playground

pytestmark = pytest.mark.slow
CODE, SECRET = "owl-42", "a long teacher's secret"
FOOD = ("soup", "bread", "cake", "eat", "ate", "dinner", "lunch", "breakfast", "food", "pizza", "coffee", "tea")


@pytest.fixture(scope="module")
def app(tmp_path_factory, request):
    with serve_playground(tmp_path_factory.mktemp("class"), lambda: request.getfixturevalue("embedded_host"),
                          class_code=CODE, teacher_secret=SECRET, min_votes=4) as served:
        yield served


def stored(app) -> tuple[int, int]:
    """(votes, students) in the class's database, every class's, read through a connection of our own."""
    store = SQLiteVoteStore(app.runs_dir.parent / "classroom" / "votes.sqlite")
    try:
        lessons = store.classes()
        return sum(len(store.votes(c.id)) for c in lessons), sum(len(store.students(c.id)) for c in lessons)
    finally:
        store.close()


def joined(app, name: str, token: str = "") -> tuple[Client, dict]:
    client = Client(app.url, verbose=False)
    return client, client.predict(code=CODE, name=name, token=token, api_name="/class_join")


def prefers_food(pair: dict) -> str:
    count = {side: sum(pair[side].lower().count(word) for word in FOOD) for side in "AB"}
    return "A" if count["A"] >= count["B"] else "B"


def refused(call, message: str) -> str:
    with pytest.raises(AppError, match=message) as caught:
        call()
    return str(caught.value)


def test_a_class_votes_learns_trains_and_votes_on_what_it_made(app):
    ann, ann_id = joined(app, "Ann")
    bob, _ = joined(app, "Bob")
    stranger = Client(app.url, verbose=False)
    prompts = ["On Saturday morning my sister and I", "When I got home from school, my mother",
               "The trip to the coast was long, and when we arrived"]
    pairs = {}
    for who, client in (("ann", ann), ("bob", bob)):
        for prompt in prompts[:2 if who == "bob" else 3]:
            pair = client.predict(task="sentiment", inputs={"text": prompt}, adapter="sentiment", alpha=1.0, api_name="/vote_pair")
            assert set(pair) == {"pair", "A", "B"} and pair["A"].strip() and pair["B"].strip()  # blind: texts and an id
            reveal = client.predict(pair=pair["pair"], choice=prefers_food(pair), reason="<b>food</b> | *yes*", api_name="/vote")
            assert reveal["saved"] and {reveal["A"]["side"], reveal["B"]["side"]} == {"base", "adapter sentiment"}
            assert 0 <= reveal["A"]["reward"] <= 1 and reveal["reward"] == "sentiment"
            pairs.setdefault(who, []).append(pair)
    assert stored(app) == (5, 2)

    # The abuse: each refused with one message, nothing stored, the app serving on.
    first = pairs["ann"][0]["pair"]
    refused(lambda: stranger.predict(task="sentiment", inputs={"text": "Hi"}, adapter="sentiment", api_name="/vote_pair"),
            "Join the class first")
    refused(lambda: stranger.predict(pair=first, choice="A", reason="", api_name="/vote"), "Join the class first")
    refused(lambda: ann.predict(pair="made-up", choice="A", reason="", api_name="/vote"), "There is no such pair")
    refused(lambda: ann.predict(pair=first, choice="B", reason="", api_name="/vote"), "You have voted on this pair already")
    refused(lambda: bob.predict(pair=first, choice="B", reason="", api_name="/vote"), "shown to someone else")
    unvoted = ann.predict(task="sentiment", inputs={"text": "My dad's new hobby is"}, adapter="sentiment", api_name="/vote_pair")
    message = refused(lambda: ann.predict(pair=unvoted["pair"], choice="A", reason="x" * 100_000, api_name="/vote"),
                      "The reason must be text of at most 500 characters, got 100,000 characters")
    assert len(message) < 200
    refused(lambda: joined(app, "ann"), "The name 'ann' is taken in this class")  # a student voting as another
    refused(lambda: joined(app, "Ann", token="guessed"), "The name 'Ann' is taken")
    refused(lambda: ann.predict(secret="guess", api_name="/class_teacher"), "That is not the teacher's secret")
    refused(lambda: ann.predict(api_name="/class_students"), "Only the teacher may do this")
    assert stored(app) == (5, 2)
    base, *_ = bob.predict(text="The harbour was", adapter="none", max_new_tokens=4, seed=0, api_name="/generate_sentiment")
    assert base.strip()

    teacher = Client(app.url, verbose=False)
    teacher.predict(secret=SECRET, api_name="/class_teacher")
    students = {row["student"]: row for row in teacher.predict(api_name="/class_students")}
    assert (students["Ann"]["votes"], students["Ann"]["pairs"], students["Bob"]["votes"]) == (3, 4, 2)
    assert {row["reason"] for row in teacher.predict(api_name="/class_votes")} == {"<b>food</b> | *yes*"}  # data as typed
    with open(teacher.predict(api_name="/class_export"), encoding="utf-8") as exported:
        rows = [json.loads(line) for line in exported]
    assert len(rows) == 5 and {r["student"] for r in rows} == {"Ann", "Bob"} and rows[0]["inputs"]["text"] == prompts[0]

    learned = teacher.predict(name="class-food", api_name="/class_learn")
    assert learned["votes"] == 5 and learned["decisive"] == 5 and 0 <= learned["agreement"] <= 1
    refused(lambda: teacher.predict(name="class-food", api_name="/class_learn"), "exists already")
    snapshot = ann.predict(model="class-food", honest=["relevance"], minutes=0.05, lr=1e-3, batch_size=2, group_size=2,
                           max_new_tokens=4, eval_prompts=1, api_name="/class_train")
    assert snapshot["adapter"].startswith("class-food-pg-") and snapshot["prompts"] == "passages"  # 3 inputs: too few
    for _ in range(300):
        status = ann.predict(api_name="/train_status")  # Ann's run: she started it
        if status["state"] in ("done", "failed"):
            break
        threading.Event().wait(2)
    assert status["state"] == "done", status
    new = snapshot["adapter"]
    card = app.service.adapters[new].card
    assert card.objective["blocks"] == [{"reward": "preference", "model": "class-food", "weight": 1.0},
                                        {"reward": "relevance", "weight": 0.5}]

    # The loop closes: the class votes on the new adapter against the base, and against the old one.
    for opponent in ("base", "sentiment"):
        pair = ann.predict(adapter=new, text="On Saturday morning my sister and I", opponent=opponent, alpha=1.0,
                           api_name="/vote_pair_try")
        reveal = ann.predict(pair=pair["pair"], choice="A", reason="", api_name="/vote")
        assert reveal["reward"] == "objective class-food"
        assert {reveal["A"]["side"], reveal["B"]["side"]} == {f"adapter {new}", "base" if opponent == "base" else "adapter sentiment"}
    stats = ann.predict(api_name="/class_stats")
    rows = {(r["subject"], r["opponent"]): r for r in stats["agreement"]}
    assert rows[("adapter sentiment", "base")]["votes"] == 5
    assert rows[(f"adapter {new}", "base")]["votes"] == 1 and rows[(f"adapter {new}", "adapter sentiment")]["votes"] == 1
    board = {r["adapter"]: r for r in stats["leaderboard"]}
    assert board[new]["owner"] == "Ann" and board[new]["source"] == "trained here" and board["sentiment"]["votes"] == 5
    assert [m["name"] for m in stats["models"]] == ["class-food"]
    assert any(r["run"] == new and r["owner"] == "Ann" for r in teacher.predict(api_name="/class_runs"))

    assert teacher.predict(name="Tuesday", api_name="/class_new")["archived"] == "class 1"
    assert ann.predict(api_name="/class_stats")["votes"] == 0
    assert stored(app)[0] == 7  # archived, never deleted
    refused(lambda: ann.predict(pair=unvoted["pair"], choice="A", reason="", api_name="/vote"), "a class that has ended")


def test_every_vote_the_app_acknowledged_is_there_after_a_kill_9(tmp_path):
    """The app as a user starts it, two students voting at once; once 4 votes are acknowledged the app is killed with
    SIGKILL (their requests in flight with it), then started again: every acknowledged vote is in the database, a
    student joins again with her token and votes on, and a vote re-sent after the kill is told it is saved."""
    import os

    from bench.classroom import App

    flags = ["--runs-dir", str(tmp_path / "runs"), "--class-code", CODE, "--dtype", "float32"]
    app = App(flags, {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}, str(tmp_path / "app.log"))
    app.start()
    try:
        acknowledged, lock, tokens, kill = [], threading.Lock(), {}, threading.Event()

        def student(name: str):
            client = Client(app.url, verbose=False)
            tokens[name] = client.predict(code=CODE, name=name, token="", api_name="/class_join")["token"]
            for i in range(6):
                try:
                    pair = client.predict(task="sentiment", inputs={"text": f"On day {i} we"}, adapter="sentiment",
                                          api_name="/vote_pair")
                    client.predict(pair=pair["pair"], choice="A", reason="", api_name="/vote")
                except Exception:  # noqa: BLE001 - the app was killed under this request: it was not acknowledged
                    return
                with lock:
                    acknowledged.append((name, pair["pair"]))
                    if len(acknowledged) >= 4:
                        kill.set()

        threads = [threading.Thread(target=student, args=(name,)) for name in ("Ann", "Bob")]
        for t in threads:
            t.start()
        assert kill.wait(900)
        app.kill()
        for t in threads:
            t.join(60)
        app.start()
        store = SQLiteVoteStore(tmp_path / "classroom" / "votes.sqlite")
        try:
            saved = {v.pair_id for v, _ in store.votes(store.current_class().id)}
        finally:
            store.close()
        assert len(acknowledged) >= 4 and {pair_id for _, pair_id in acknowledged} <= saved

        ann = Client(app.url, verbose=False)
        assert ann.predict(code=CODE, name="Ann", token=tokens["Ann"], api_name="/class_join")["student"] == "Ann"
        anns = [pair_id for name, pair_id in acknowledged if name == "Ann"] or [pair_id for _, pair_id in acknowledged]
        who = "Ann" if any(name == "Ann" for name, _ in acknowledged) else "Bob"
        client = ann if who == "Ann" else Client(app.url, verbose=False)
        if who == "Bob":
            client.predict(code=CODE, name="Bob", token=tokens["Bob"], api_name="/class_join")
        with pytest.raises(AppError, match="You have voted on this pair already"):  # sent again after the kill: it is saved
            client.predict(pair=anns[0], choice="B", reason="", api_name="/vote")
        pair = ann.predict(task="sentiment", inputs={"text": "After the storm, our street"}, adapter="sentiment",
                           api_name="/vote_pair")
        assert ann.predict(pair=pair["pair"], choice="B", reason="", api_name="/vote")["saved"]
    finally:
        app.stop()
