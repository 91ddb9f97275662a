"""Class mode's rules at the service level (app/classroom.py), on a real SQLite database and a stand-in for the
playground that "decodes" instantly: who is who, blind pairs, the abuse the issue lists (each refused with one clear
message, nothing stored), the class against the reward, learning and training on the class preference, the teacher's
view, a new class. The real app, MiniLM and the browser are in test_class_mode.py and test_browser.py."""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from app import views
from app.classroom import REASON_CHARS, TEACHER_TRIES, ClassError, Classroom, resolve_sign_in
from app.config import AppConfig, ConfigError
from tests.test_preferences import BagOfWords

SECRET = "correct horse battery staple"


@dataclass
class FakeService:
    """What the classroom asks of app.service.Playground, answered at once: 'base' writes about trains, an adapter
    about soup; the reward likes soup."""

    device: str = "cpu"
    adapters: dict = field(default_factory=lambda: {"sentiment": SimpleNamespace(source="shipped", card=SimpleNamespace(
        task="sentiment", objective=None, alpha=1.0)), "class-1-1-pg-1": SimpleNamespace(
        source="trained here", card=SimpleNamespace(task="custom", objective={"name": "class-1-1"}, alpha=1.0))})
    on_close: list = field(default_factory=list)
    started: list = field(default_factory=list)
    training: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(jobs=[]))
    counter: itertools.count = field(default_factory=itertools.count)

    def continuations(self, task, inputs, sides, settings=None):
        texts = [f"{inputs['text']} the train {next(self.counter)}" if name is None else
                 f"{inputs['text']} soup and bread {next(self.counter)}" for name, _ in sides]
        scores = [{"reward": 0.3 if name is None else 0.8} for name, _ in sides]
        return SimpleNamespace(task=task, reward=task, inputs=dict(inputs), texts=texts, scores=scores,
                               alphas=[0.0 if name is None else (alpha or 1.0) for name, alpha in sides])

    def start_training(self, request, owner=None, local=True):
        self.started.append((request, owner, local))
        return {"adapter": f"{request.objective['name']}-pg-{len(self.started)}", "state": "queued"}


def classroom(tmp_path, **settings) -> Classroom:
    config = AppConfig(runs_dir=str(tmp_path / "runs"), **settings)
    return Classroom(config, FakeService())


@pytest.fixture
def coded(tmp_path):
    room = classroom(tmp_path, class_code="owl-42", teacher_secret=SECRET)
    yield room
    room.close()


def votes_and_people(room: Classroom) -> tuple[int, int]:
    """Votes and students stored, every class's."""
    lessons = room.store.classes()
    return (sum(len(room.store.votes(c.id)) for c in lessons), sum(len(room.store.students(c.id)) for c in lessons))


# --- who is who ---------------------------------------------------------------------------------------------------


def test_sign_in_follows_the_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert resolve_sign_in(AppConfig()) == "anonymous"
    assert resolve_sign_in(AppConfig(class_code="x")) == "code"
    monkeypatch.setenv("SPACE_ID", "teacher/ipa")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "abc")
    assert resolve_sign_in(AppConfig(class_code="x")) == "hf"  # on a Space with hf_oauth: its accounts
    assert resolve_sign_in(AppConfig(sign_in="anonymous")) == "anonymous"


def test_a_name_belongs_to_the_browser_that_joined_with_it_first(coded):
    ann = coded.join("s1", code="owl-42", name="  Ann   Lee ")
    assert ann["student"] == "Ann Lee" and ann["token"] and ann["sign_in"] == "code"
    with pytest.raises(ClassError, match="The name 'ann lee' is taken in this class"):
        coded.join("s2", code="owl-42", name="ann lee")  # another browser: a student voting as another
    with pytest.raises(ClassError, match="The name 'Ann Lee' is taken"):
        coded.join("s2", code="owl-42", name="Ann Lee", token="guessed")
    assert coded.join("s3", code="owl-42", name="Ann Lee", token=ann["token"])["student"] == "Ann Lee"  # her browser again
    assert coded.student("s3").id == coded.student("s1").id
    with pytest.raises(ClassError, match="not this class's code"):
        coded.join("s4", code="owl-43", name="Bob")
    with pytest.raises(ClassError, match="Your name must be 1 to 40 letters"):
        coded.join("s4", code="owl-42", name="<script>alert(1)</script>")
    assert votes_and_people(coded) == (0, 1)


def test_anonymous_ids_are_kept_by_the_browser_and_stored_only_when_shown_a_pair(tmp_path):
    room = classroom(tmp_path)
    first = room.join("s1")
    assert first["student"].startswith("anonymous-") and room.join("s9", token=first["token"])["student"] == first["student"]
    assert votes_and_people(room) == (0, 0)  # nobody stored for visiting
    room.show_pair("s1", "sentiment", {"text": "On Saturday we"}, "sentiment")
    assert votes_and_people(room) == (0, 1)
    room.close()


def test_hugging_face_sign_in_needs_a_space_with_oauth_then_the_pages_sign_in(tmp_path, monkeypatch):
    import importlib.util

    import app.classroom

    monkeypatch.delenv("SPACE_ID", raising=False)
    with pytest.raises(ConfigError, match="works on a Hugging Face Space with hf_oauth: true"):
        classroom(tmp_path, sign_in="hf")  # elsewhere Gradio would sign everyone in as the machine's own account
    monkeypatch.setenv("SPACE_ID", "teacher/ipa")
    if importlib.util.find_spec("authlib") is None:
        with pytest.raises(ConfigError, match=r"needs Gradio's oauth extra"):
            classroom(tmp_path, sign_in="hf")
        monkeypatch.setattr(app.classroom.importlib.util, "find_spec", lambda name, *rest: object())
    room = classroom(tmp_path, sign_in="hf")
    with pytest.raises(ClassError, match="Sign in with Hugging Face first"):
        room.show_pair("s1", "sentiment", {"text": "On Saturday we"}, "sentiment")
    assert room.join("s1", hf_user="ann")["student"] == "ann"
    assert room.owner("s1") == "hf:ann"
    room.close()


# --- blind pairs and votes ------------------------------------------------------------------------------------------


def test_a_pair_is_blind_until_the_vote_is_stored_then_revealed(coded):
    coded.join("s1", code="owl-42", name="Ann")
    shown = coded.show_pair("s1", "sentiment", {"text": "On Saturday we"}, "sentiment")
    assert set(shown) == {"pair", "A", "B"} and len(shown["pair"]) >= 16  # the texts and an unguessable id: nothing else
    soup = "A" if "soup" in shown["A"] else "B"
    reveal = coded.vote("s1", shown["pair"], soup, "it talks about food")
    assert reveal["saved"] and reveal[soup]["side"] == "adapter sentiment" and reveal[soup]["reward"] == 0.8
    assert reveal["reward_choice"] == soup and reveal["agrees"] is True
    assert votes_and_people(coded) == (1, 1)
    orders = {coded.show_pair("s1", "sentiment", {"text": "x"}, "sentiment")["A"].split()[1] for _ in range(40)}
    assert orders == {"the", "soup"}  # the adapter's text is shown first sometimes, second other times


@pytest.mark.parametrize("case", ["never shown", "repeated", "another's", "not signed in", "long reason", "bad choice",
                                  "ended class"])
def test_abuse_is_refused_with_one_clear_message_and_nothing_is_stored(coded, case):
    coded.join("ann", code="owl-42", name="Ann")
    coded.join("bob", code="owl-42", name="Bob")
    shown = coded.show_pair("ann", "sentiment", {"text": "On Saturday we"}, "sentiment")
    if case == "repeated":
        coded.vote("ann", shown["pair"], "A")
    before = votes_and_people(coded)
    session, pair, choice, reason, message = "ann", shown["pair"], "A", "", ""
    if case == "never shown":
        pair, message = "made-up-pair-id", "There is no such pair: vote on a pair the page showed you"
    elif case == "repeated":
        choice, message = "B", "You have voted on this pair already"
    elif case == "another's":
        session, message = "bob", "This pair was shown to someone else"
    elif case == "not signed in":
        session, message = "stranger", "Join the class first"
    elif case == "long reason":
        reason, message = "x" * 100_000, f"The reason must be text of at most {REASON_CHARS} characters, got 100,000"
    elif case == "bad choice":
        choice, message = "<b>A</b>", "A vote is A, B or same"
    elif case == "ended class":
        coded.teacher_sign_in("teacher", SECRET)
        coded.new_class("teacher", "Tuesday")
        message = "This pair belongs to a class that has ended"
        before = votes_and_people(coded)
    with pytest.raises(ClassError, match=message) as refused:
        coded.vote(session, pair, choice, reason)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 200
    assert votes_and_people(coded) == before


def test_a_reason_with_markup_is_stored_as_typed_and_shown_to_the_teacher_as_text(coded):
    coded.join("ann", code="owl-42", name="Ann")
    shown = coded.show_pair("ann", "sentiment", {"text": "On Saturday we"}, "sentiment")
    reason = '<img src=x onerror=alert(1)> [click](http://evil.example) | *bold*'
    coded.vote("ann", shown["pair"], "A", reason)
    coded.teacher_sign_in("t", SECRET)
    [row] = coded.recent_votes("t")
    assert row["reason"] == reason
    shown_md = views.recent_votes_markdown([row])
    assert "<img" not in shown_md and "&lt;img" in shown_md and "\\[click\\]" in shown_md and "\\|" in shown_md


# --- the teacher ----------------------------------------------------------------------------------------------------


def test_a_forged_teacher_secret_is_refused_never_logged_and_slowed_down(coded, caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(ClassError, match="Only the teacher may do this"):
        coded.students("s1")
    for _ in range(TEACHER_TRIES):
        with pytest.raises(ClassError, match="That is not the teacher's secret"):
            coded.teacher_sign_in("s1", "hunter2")
    with pytest.raises(ClassError, match="Too many wrong secrets: wait"):
        coded.teacher_sign_in("s1", SECRET)  # even the right one, until the wait is over
    coded.teacher_sign_in("s2", SECRET)
    assert coded.students("s2") == [] and not coded.is_teacher("s1")
    assert "hunter2" not in caplog.text and SECRET not in caplog.text
    assert SECRET not in repr(coded.config) and "owl-42" not in repr(coded.config)


def test_without_a_secret_the_teacher_is_a_browser_on_this_machine(tmp_path):
    room = classroom(tmp_path)
    assert room.students("s1", local=True) == []
    with pytest.raises(ClassError, match="a browser on the machine"):
        room.students("s1", local=False)
    with pytest.raises(ClassError, match="started without a teacher's secret"):
        room.teacher_sign_in("s1", "anything")
    room.close()


# --- the class against the reward, learning, training, a new class --------------------------------------------------------


def test_the_class_against_the_reward_and_the_leaderboard(coded):
    coded.join("ann", code="owl-42", name="Ann")
    for i in range(10):  # the class likes the adapter 7 times, the base 3; the reward always likes the adapter
        shown = coded.show_pair("ann", "sentiment", {"text": f"Day {i}"}, "sentiment")
        adapter_side = "A" if "soup" in shown["A"] else "B"
        coded.vote("ann", shown["pair"], adapter_side if i < 7 else {"A": "B", "B": "A"}[adapter_side])
    shown = coded.show_pair("ann", "sentiment", {"text": "Day 10"}, "sentiment")
    coded.vote("ann", shown["pair"], "same")
    [row] = coded.agreement()
    assert (row["subject"], row["opponent"], row["votes"]) == ("adapter sentiment", "base", 11)
    assert (row["class_wins"], row["class_losses"], row["class_ties"]) == (7, 3, 1)
    assert row["class_win_rate"] == 0.7 and row["class_low"] < 0.7 < row["class_high"]
    assert (row["reward_wins"], row["reward_win_rate"]) == (11, 1.0)
    assert (row["agreement"], row["compared"]) == (0.7, 10)
    [top] = coded.leaderboard()
    assert (top["adapter"], top["source"], top["win_rate"], top["decisive"]) == ("sentiment", "shipped", 0.7, 10)
    assert "0.70 (0.40-0.89)" in views.agreement_markdown([row])


def test_learning_needs_the_teacher_and_enough_votes_then_trains_on_the_class_inputs(coded, monkeypatch):
    import ipa.rewards.resources

    monkeypatch.setattr(ipa.rewards.resources, "sentence_embedder", lambda device="cpu": BagOfWords())
    coded.join("ann", code="owl-42", name="Ann")
    coded.teacher_sign_in("t", SECRET)
    with pytest.raises(ClassError, match="Only the teacher"):
        coded.learn("ann")
    for i in range(12):
        shown = coded.show_pair("ann", "sentiment", {"text": f"On day {i} we"}, "sentiment")
        coded.vote("ann", shown["pair"], "A" if "soup" in shown["A"] else "B")
    with pytest.raises(Exception, match=r"12 decisive votes .* at least 30"):
        coded.learn("t")
    assert coded.models() == []
    for i in range(12, 40):
        shown = coded.show_pair("ann", "sentiment", {"text": f"On day {i} we"}, "sentiment")
        coded.vote("ann", shown["pair"], "A" if "soup" in shown["A"] else "B")
    learned = coded.learn("t")
    assert learned["name"] == "class-1-1" and learned["decisive"] == 40 and learned["agreement"] >= 0.9
    assert f"picks the text the class picked **{learned['agreement']:.2f}** of the time" in views.learned_markdown(learned)
    with pytest.raises(ClassError, match="exists already"):
        coded.learn("t", "class-1-1")
    assert [m["name"] for m in coded.stats()["models"]] == ["class-1-1"]

    with pytest.raises(ClassError, match="blocks that keep a class preference honest are fluency, relevance"):
        coded.train("ann", "class-1-1", ["toxicity"])
    with pytest.raises(ClassError, match="no preference model named 'nope'"):
        coded.train("ann", "nope")
    snapshot = coded.train("ann", "class-1-1", ["fluency", "relevance"], minutes=3, local=True, lr=1e-3)
    request, owner, _ = coded.service.started[-1]
    assert owner == "name:ann" and snapshot["prompts"] == "the class's inputs" and snapshot["prompt_count"] == 40
    assert request.objective["blocks"] == [{"reward": "preference", "model": "class-1-1", "weight": 1.0},
                                           {"reward": "fluency", "weight": 0.5}, {"reward": "relevance", "weight": 0.5}]
    assert request.prompts_text.splitlines()[0] == "On day 0 we" and (request.budget, request.amount) == ("minutes", 3)
    coded.teacher_sign_in("t", SECRET)
    assert coded.runs("t")[0]["owner"] == "Ann"  # the run is Ann's in the teacher's view
    assert coded.leaderboard()[0]["owner"] == ""  # the shipped adapter: nobody's


def test_export_and_a_new_class_that_archives_the_old_votes(coded, tmp_path):
    coded.join("ann", code="owl-42", name="Ann")
    shown = coded.show_pair("ann", "sentiment", {"text": "On Saturday we"}, "sentiment")
    coded.vote("ann", shown["pair"], "B", "more <em>vivid</em>")
    coded.teacher_sign_in("t", SECRET)
    path = coded.export("t", tmp_path)
    [row] = [json.loads(line) for line in path.read_text().splitlines()]
    assert (row["student"], row["choice"], row["reason"], row["pair"]) == ("Ann", "B", "more <em>vivid</em>", shown["pair"])
    assert {row["side_a"], row["side_b"]} == {"base", "adapter sentiment"} and row["class"] == "class 1"
    with pytest.raises(ClassError, match="offline"):
        coded.push_to_hub("t", "teacher/class-votes")  # the tests run with HF_HUB_OFFLINE=1
    with pytest.raises(ClassError, match="OWNER/NAME"):
        coded.push_to_hub("t", "../../x")
    with pytest.raises(ClassError, match="Only the teacher"):
        coded.new_class("ann", "Tuesday")
    assert coded.new_class("t", "Tuesday") == {"archived": "class 1", "class": "Tuesday", "class_id": 2}
    assert coded.stats()["votes"] == 0 and coded.agreement() == []
    assert len(coded.export_rows(class_id=1)) == 1  # archived, not deleted
    again = coded.show_pair("ann", "sentiment", {"text": "Now"}, "sentiment")  # Ann is in the new class by herself
    coded.vote("ann", again["pair"], "A")
    assert coded.stats()["votes"] == 1 and [s["student"] for s in coded.students("t")] == ["Ann"]
