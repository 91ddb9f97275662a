"""A class's preferences below the page: the vote store (SQLite in WAL mode: durable, one vote a pair, classes archived
not deleted), the Bradley-Terry fit and its held-out agreement, the preference reward block and its file format, the
block in objectives and in a training run from the command line.

The fast tests embed text with a bag of hashed words (a few microseconds a text); the slow ones with the real MiniLM.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from ipa.preferences.learn import MIN_VOTES, Judged, NotEnoughVotes, fit, fold_of, learn, read_jsonl
from ipa.preferences.store import ClassRecord, DuplicateVote, Pair, SQLiteVoteStore, Student, Vote
from ipa.rewards.objective import Objective, ObjectiveError
from ipa.rewards.preference import PreferenceModel, PreferenceModelError, PreferenceReward, list_models
from ipa.tasks.metrics import win_rate
from tests.helpers import REPO, run_module, tiny_config

FOOD = ["bread", "soup", "cheese", "apples", "pizza", "cake", "dinner", "lunch", "pasta", "tea", "rice", "cookies"]
OTHER = ["train", "meeting", "river", "letter", "garden", "music", "bicycle", "weather", "museum", "email", "rain", "chess"]


class BagOfWords:
    """A stand-in for MiniLM: each word a fixed random direction (from its hash), a text the normalised sum."""

    dimension = 64

    def encode(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            vector = torch.zeros(self.dimension)
            for word in text.lower().replace(".", " ").split():
                seed = int.from_bytes(hashlib.sha1(word.encode()).digest()[:4], "big")
                vector += torch.randn(self.dimension, generator=torch.Generator().manual_seed(seed))
            rows.append(vector / vector.norm() if vector.norm() > 0 else vector)
        return torch.stack(rows) if rows else torch.zeros((0, self.dimension))


def sentence(rng: random.Random, food: bool) -> str:
    words = rng.sample(OTHER, 3) + (rng.sample(FOOD, 2) if food else rng.sample(OTHER, 2))
    rng.shuffle(words)
    return "we talked about " + " and ".join(words)


def class_votes(n: int, flip: float = 0.1, seed: int = 0) -> list[Judged]:
    """n votes of a class that prefers the text about food (10 % flipped); pairs where both or neither talk of food
    are 'same'."""
    rng = random.Random(seed)
    votes = []
    for i in range(n):
        food_a, food_b = rng.random() < 0.5, rng.random() < 0.5
        choice = "same" if food_a == food_b else ("A" if food_a else "B")
        if choice != "same" and rng.random() < flip:
            choice = {"A": "B", "B": "A"}[choice]
        votes.append(Judged(f"pair-{i}", sentence(rng, food_a), sentence(rng, food_b), choice))
    return votes


# --- the store ---------------------------------------------------------------------------------------------------


def a_pair(store: SQLiteVoteStore, student: Student, pair_id: str = "p1") -> Pair:
    pair = Pair(pair_id, student.class_id, student.id, "sentiment", "sentiment", {"text": "On Saturday we"}, "ate soup.",
                "read a book.", "base", "adapter sentiment", 0.4, 0.7, 0.0, 1.0, "B")
    store.add_pair(pair)
    return pair


@pytest.fixture
def store(tmp_path):
    store = SQLiteVoteStore(tmp_path / "votes.sqlite")
    yield store
    store.close()


def test_the_store_is_sqlite_in_wal_mode_and_reads_back_what_it_wrote(store, tmp_path):
    assert store.journal_mode == "wal"
    lesson = store.current_class()
    assert isinstance(lesson, ClassRecord) and lesson.archived is None and store.current_class() == lesson
    ann = store.add_student(Student(0, lesson.id, "name:ann", "Ann", "code", "h"))
    pair = a_pair(store, ann)
    assert store.pair("p1") == pair and store.pair("nope") is None
    store.add_vote(Vote("p1", lesson.id, ann.id, "A", "<b>soup</b> | is food"))
    [(vote, judged)] = store.votes(lesson.id)
    assert (vote.choice, vote.reason, judged) == ("A", "<b>soup</b> | is food", pair)  # stored as given; escaped where shown
    assert store.counts(lesson.id) == {ann.id: (1, 1)}
    other = SQLiteVoteStore(tmp_path / "votes.sqlite")  # another connection (another process would be the same) sees it
    try:
        assert other.vote("p1").choice == "A"
    finally:
        other.close()


def test_one_vote_a_pair_is_the_databases_rule(store):
    lesson = store.current_class()
    ann = store.add_student(Student(0, lesson.id, "name:ann", "Ann", "code"))
    a_pair(store, ann)
    store.add_vote(Vote("p1", lesson.id, ann.id, "A"))
    with pytest.raises(DuplicateVote, match="one vote a pair"):
        store.add_vote(Vote("p1", lesson.id, ann.id, "B"))
    assert [v.choice for v, _ in store.votes(lesson.id)] == ["A"]
    with pytest.raises(Exception):  # a vote on a pair that is not there: the foreign key refuses it
        store.add_vote(Vote("never-shown", lesson.id, ann.id, "A"))
    assert len(store.votes(lesson.id)) == 1


def test_a_new_class_archives_the_old_one_and_deletes_nothing(store):
    first = store.current_class()
    ann = store.add_student(Student(0, first.id, "name:ann", "Ann", "code"))
    a_pair(store, ann)
    store.add_vote(Vote("p1", first.id, ann.id, "B"))
    second = store.new_class("Tuesday")
    assert store.current_class() == second and second.id != first.id
    archived = [c for c in store.classes() if c.id == first.id][0]
    assert archived.archived is not None
    assert len(store.votes(first.id)) == 1 and store.votes(second.id) == []
    again = store.add_student(Student(0, second.id, "name:ann", "Ann", "code"))  # a name is per class
    assert again.id != ann.id


DURABLE_VOTER = """
import sys, time
sys.path.insert(0, {repo!r})
from ipa.preferences.store import Pair, SQLiteVoteStore, Student, Vote
store = SQLiteVoteStore({path!r})
lesson = store.current_class()
ann = store.add_student(Student(0, lesson.id, "name:ann", "Ann", "code"))
for i in range(1000):
    store.add_pair(Pair(f"p{{i}}", lesson.id, ann.id, "sentiment", "sentiment", {{}}, "a", "b", "base", "adapter x", 0.1, 0.2))
    store.add_vote(Vote(f"p{{i}}", lesson.id, ann.id, "A"))
    print(f"acked p{{i}}", flush=True)
"""


@pytest.mark.slow
def test_a_vote_acknowledged_before_a_kill_9_is_in_the_database(tmp_path):
    """A process stores votes and says so after each; it is killed (SIGKILL) right after its 25th acknowledgement,
    mid-stream: every vote it acknowledged is there when the database is opened again."""
    path = tmp_path / "votes.sqlite"
    voter = subprocess.Popen([sys.executable, "-c", DURABLE_VOTER.format(repo=str(REPO), path=str(path))],
                             stdout=subprocess.PIPE, text=True)
    acked = []
    for line in voter.stdout:
        acked.append(line.split()[1])
        if len(acked) == 25:
            os.kill(voter.pid, signal.SIGKILL)
            break
    voter.wait(30)
    acked += [line.split()[1] for line in voter.stdout.read().splitlines() if line.startswith("acked")]  # said before dying
    assert voter.returncode == -signal.SIGKILL
    store = SQLiteVoteStore(path)
    try:
        stored = {v.pair_id for v, _ in store.votes(store.current_class().id)}
    finally:
        store.close()
    assert set(acked) <= stored and len(acked) >= 25


# --- the Bradley-Terry fit -------------------------------------------------------------------------------------------


def test_learned_preference_agrees_with_held_out_votes_and_ranks_unseen_texts(tmp_path):
    votes = class_votes(300)
    learned = learn(votes, BagOfWords(), "food", tmp_path, card={"class": "class 1"})
    assert learned.decisive == sum(v.choice != "same" for v in votes)
    assert learned.agreement >= 0.8 and learned.agreement_low > 0.5  # the flips cap it near 0.9
    assert learned.agreement_high <= 1.0
    reward = PreferenceReward("food", embedder=BagOfWords(), folder=tmp_path)
    rng = random.Random(99)
    unseen = [(sentence(rng, True), sentence(rng, False)) for _ in range(50)]
    scores = reward([""] * 100, [t for pair in unseen for t in pair])
    assert all(0 < s < 1 for s in scores)
    assert sum(scores[2 * i] > scores[2 * i + 1] for i in range(50)) >= 45  # the food text first, nearly always
    card = json.loads((tmp_path / "food" / "card.json").read_text())
    assert card["class"] == "class 1" and card["decisive"] == learned.decisive and card["held_out_votes"] == learned.decisive
    assert sorted(p.name for p in (tmp_path / "food").iterdir()) == ["card.json", "model.safetensors"]  # nothing pickled


def test_a_coin_flipping_class_gets_a_coin_flipping_agreement(tmp_path):
    rng = random.Random(1)
    votes = [Judged(f"p{i}", sentence(rng, True), sentence(rng, False), rng.choice("AB")) for i in range(200)]
    learned = learn(votes, BagOfWords(), "coin", tmp_path)
    assert learned.agreement_low < 0.5 < learned.agreement_high  # held out, it cannot tell


def test_too_few_decisive_votes_are_refused_and_nothing_is_saved(tmp_path):
    votes = [Judged(f"p{i}", "soup", "rain", "A") for i in range(MIN_VOTES - 1)] + [Judged("q", "a", "b", "same")] * 5
    with pytest.raises(NotEnoughVotes, match=rf"cast {MIN_VOTES - 1} decisive votes .*5 said about the same.*at least {MIN_VOTES}"):
        learn(votes, BagOfWords(), "early", tmp_path)
    assert list_models(tmp_path) == []


def test_folds_come_from_the_pair_id_and_ties_pull_nothing():
    assert fold_of("pair-7") == fold_of("pair-7") and {fold_of(f"p{i}") for i in range(100)} == {0, 1, 2, 3, 4}
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    w = fit(x, torch.tensor([0.5, 0.5], dtype=torch.float64), l2=0.01)
    assert float(w.abs().max()) < 1e-9  # "about the same" on every pair: no preference at all


def test_a_model_is_never_written_over_and_a_foreign_or_broken_one_is_refused(tmp_path):
    model = PreferenceModel("m1", torch.ones(64), 0.0)
    model.save(tmp_path)
    with pytest.raises(PreferenceModelError, match="exists already"):
        PreferenceModel("m1", torch.zeros(64), 1.0).save(tmp_path)
    assert PreferenceModel.load("m1", tmp_path).weight.sum() == 64
    with pytest.raises(PreferenceModelError, match=r"no preference model named 'm2' \(learned so far: m1\)"):
        PreferenceModel.load("m2", tmp_path)
    with pytest.raises(PreferenceModelError, match="must be a name"):
        PreferenceModel.load("../m1", tmp_path)
    card = tmp_path / "m1" / "card.json"
    card.write_text(json.dumps({"name": "m1", "embedder": "another-model"}))
    with pytest.raises(PreferenceModelError, match="not one this project made"):
        PreferenceModel.load("m1", tmp_path)
    (tmp_path / "m1" / "model.safetensors").write_bytes(b"not safetensors")
    card.write_text(json.dumps({"name": "m1", "embedder": "all-MiniLM-L6-v2"}))
    with pytest.raises(PreferenceModelError, match="cannot be read"):
        PreferenceModel.load("m1", tmp_path)


def test_the_reward_block_scores_like_every_reward(tmp_path):
    PreferenceModel("m", torch.randn(64), 0.1).save(tmp_path)
    reward = PreferenceReward("m", embedder=BagOfWords(), folder=tmp_path)
    assert reward(["x", "y"], ["   ", "soup and bread"])[0] == 0.0
    with pytest.raises(TypeError, match="not a string"):
        reward(["x"], [42])
    with pytest.raises(PreferenceModelError, match="64-number embeddings, got 384"):
        PreferenceModel("m", torch.randn(64), 0.0).scores(torch.zeros(2, 384))


def test_the_block_names_a_model_never_a_path_in_an_objective():
    ok = Objective.from_dict({"name": "class-pref", "blocks": [{"reward": "preference", "model": "class-1-2"},
                                                               {"reward": "fluency", "weight": 0.5}]})
    assert ok.blocks[0].params == {"model": "class-1-2"} and ok.labels == ["preference", "fluency"]
    for bad in ("../../etc/passwd", "/srv/models/x", "a b", 3):
        with pytest.raises(ObjectiveError, match=r"block 1 \(preference\): 'model' must be a name of 1 to 64"):
            Objective.from_dict({"name": "o", "blocks": [{"reward": "preference", "model": bad}]})
    with pytest.raises(ObjectiveError, match=r"missing required parameter 'model'.*model \(required: the name of a preference"):
        Objective.from_dict({"name": "o", "blocks": [{"reward": "preference"}]})


def test_the_teachers_export_is_what_the_command_line_learns_from(tmp_path):
    rows = [{"pair": v.pair_id, "text_a": v.text_a, "text_b": v.text_b, "choice": v.choice, "student": "Ann"}
            for v in class_votes(40)]
    path = tmp_path / "votes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_jsonl(path) == class_votes(40)


def test_win_rate_leaves_ties_out_and_stays_within_zero_and_one():
    assert win_rate(10, 0)[0] == 1.0 and win_rate(10, 0)[2] == 1.0 and 0.6 < win_rate(10, 0)[1] < 0.8
    assert win_rate(0, 10)[1] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        win_rate(-1, 3)


# --- with the real MiniLM, and a training run from the command line ---------------------------------------------------


MEALS = ["We baked fresh bread and shared it with soup.", "She cooked pasta with tomatoes and cheese for dinner.",
         "They ate apples and drank tea in the kitchen.", "He ordered a pizza and a chocolate cake.",
         "The market sold ripe peaches, warm pies and coffee.", "Grandma made pancakes with honey for breakfast.",
         "We had a picnic with sandwiches and lemonade.", "The soup tasted of garlic, onions and fresh herbs.",
         "They roasted chicken with potatoes for lunch.", "I made rice with beans and a spicy curry."]
PLAIN = ["The train left the station at nine.", "She wrote a long letter to her cousin.",
         "The meeting ended after two hours.", "He fixed the bicycle in the garage.",
         "The museum opened a new wing on Monday.", "It rained all afternoon in the city.",
         "We walked along the river until dusk.", "The teacher explained the rules of chess.",
         "They painted the fence a bright blue.", "I answered every email before noon."]


@pytest.mark.slow
def test_minilm_learns_a_taste_for_food_and_a_cli_run_trains_on_the_block(tmp_path, tiny_dir):
    from ipa.rewards.resources import sentence_embedder

    rng = random.Random(0)
    train_meals, test_meals, train_plain, test_plain = MEALS[:7], MEALS[7:], PLAIN[:7], PLAIN[7:]
    votes = []
    for i in range(120):
        meal, plain = rng.choice(train_meals), rng.choice(train_plain)
        choice = "A" if rng.random() < 0.9 else "B"
        votes.append(Judged(f"v{i}", meal, plain, choice) if i % 2 else Judged(f"v{i}", plain, meal, "B" if choice == "A" else "A"))
    models = tmp_path / "preferences"
    learned = learn(votes, sentence_embedder("cpu"), "food", models)
    assert learned.agreement >= 0.8
    reward = PreferenceReward("food", folder=models)
    meal_scores, plain_scores = reward([""] * 3, test_meals), reward([""] * 3, test_plain)
    assert min(meal_scores) > max(plain_scores)  # sentences it never saw, ranked by the class's taste

    objective = tmp_path / "class.json"
    objective.write_text(json.dumps({"name": "class-food", "prompts": "passages",
                                     "blocks": [{"reward": "preference", "model": "food"},
                                                {"reward": "relevance", "weight": 0.5}]}))
    out = tmp_path / "run"
    done = run_module("ipa.training.loop", "--objective", str(objective), "--base", str(tiny_dir), "--steps", "1",
                      "--batch-size", "2", "--group-size", "2", "--max-new-tokens", "4", "--eval-prompts", "1",
                      "--eval-samples", "1", "--device", "cpu", "--out", str(out), IPA_PREFERENCES_DIR=str(models))
    assert done.returncode == 0, done.stderr[-2000:]
    [step] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= step["reward_preference"] <= 1 and 0 <= step["reward_relevance"] <= 1
    card = json.loads((out / "adapter" / "card.json").read_text())
    assert card["objective"]["blocks"][0] == {"reward": "preference", "model": "food", "weight": 1.0}

    missing = run_module("ipa.training.loop", "--objective", str(objective), "--base", str(tiny_dir), "--steps", "1",
                         "--device", "cpu", "--out", str(tmp_path / "run2"), IPA_PREFERENCES_DIR=str(tmp_path / "empty"))
    assert missing.returncode == 2 and "no preference model named 'food'" in missing.stderr
    assert "Traceback" not in missing.stderr
