"""Class mode: students compare texts blind and vote, the votes become a reward, the class trains an adapter on it.

Service level (no Gradio): the page (app/class_ui.py) and the API call these methods with the caller's session and
nothing else; every rule is checked here, on the server.

    >>> classroom = Classroom(config, service)                                                   # doctest: +SKIP
    >>> classroom.join("session-1", code="owl-42", name="Ann")                                   # doctest: +SKIP
    {'student': 'Ann', 'token': '...', 'sign_in': 'code', 'class': 'class 1'}
    >>> shown = classroom.show_pair("session-1", "sentiment", {"text": "On Saturday we"}, "sentiment")  # doctest: +SKIP
    >>> classroom.vote("session-1", shown["pair"], "A", "it talks about food")                  # doctest: +SKIP

Who is who (AppConfig.sign_in): on a Space with `hf_oauth: true`, the Hugging Face account ('hf'); elsewhere the class
code and a display name ('code': a name belongs to the first browser that joins with it, which keeps a secret token,
so nobody else can vote as it), or an anonymous id kept in the browser ('anonymous'). A session is bound to its
person by join(); votes, pairs, runs and the limits below belong to that person, not to a browser tab. The teacher is
whoever gives the secret the playground was started with (AppConfig.teacher_secret, compared as a salted hash; without
one, a browser on the server's own machine).

Blind pairs: show_pair decodes two continuations of one input (the base and an adapter, or two adapters), each with its
own random numbers, scores both with the reward, stores the pair (app never trusts the page to say what it showed)
and returns only the two texts, in random order, under an unguessable id. vote() accepts one vote a pair, from the
person it was shown to, stores it (durable before it returns: ipa.preferences.store) and only then reveals which text
was which and the reward of each.

What people think against what the reward thinks (agreement): per reward and comparison, the class's win rate of the
subject (the adapter against the base, or the adapter a student chose against the other) with its 95 % Wilson
interval, the reward's verdict on the same pairs, and how often the two agree, "about the same" and reward ties left
out. The leaderboard ranks the adapters by the class's win rate against the base.

Votes become a reward: learn() fits a Bradley-Terry preference model on the class's votes (ipa.preferences.learn) and
reports its held-out agreement; train() queues a run for the objective "class preference (+ fluency, relevance)" on
the inputs the class voted on (app.service.Playground.start_training: the same queue, limits and access rules as the
Train tab).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import importlib.util
import json
import logging
import os
import re
import secrets
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ipa.errors import UserError, check_number, check_text, quote
from ipa.preferences.learn import Judged, learn
from ipa.preferences.store import DuplicateVote, Pair, SQLiteVoteStore, Student, Vote, VoteStore
from ipa.rewards.preference import PREFERENCES_ENV, check_model_name, list_models
from ipa.rewards.objective import ObjectiveError
from ipa.tasks.metrics import win_rate
from ipa.tasks.objective import MIN_FILE_PROMPTS
from app.config import AppConfig, ConfigError
from app.service import SHIPPED, Playground, Settings
from app.training_jobs import TrainRequest

log = logging.getLogger("ipa.classroom")

REASON_CHARS = 500
"""The longest reason a vote may carry: a sentence or two, not an essay (a 100,000-character reason is refused)."""
NAME_CHARS = 40
DISPLAY_NAME = re.compile(r"[^\W_][\w .'’-]*")
"""A display name: letters, digits, spaces, '.', ''', '-', '_'; starting with a letter or digit. Shown escaped anyway."""
MAX_PAIRS = 400
"""Pairs one person may be shown in one class (each costs two decodings): a class of 30 voting 20 times is far below."""
MAX_VOTES = MAX_PAIRS
MAX_SESSIONS = 10_000
"""Page sessions remembered (the oldest forgotten first: its person joins again on the next page load)."""
TEACHER_TRIES, TEACHER_WAIT = 5, 60.0
"""A session that gives a wrong teacher's secret this many times waits this many seconds before trying again."""
REWARD_TIE = 0.005
"""Rewards closer than this count as a tie in the reward's verdict (as "about the same" does in a vote)."""
BASE = "base"
HONEST_BLOCKS = ("fluency", "relevance")
"""Blocks that may keep a class-preference objective honest (each at weight HONEST_WEIGHT)."""
HONEST_WEIGHT = 0.5
TOKEN_BYTES = 24


class ClassError(UserError):
    """A class-mode request that cannot be served (not signed in, a pair not shown to the voter, a forged secret);
    the message says what to do instead."""


def resolve_sign_in(config: AppConfig) -> str:
    """AppConfig.sign_in with 'auto' decided: hf on a Space whose OAuth is set up (hf_oauth: true gives it
    OAUTH_CLIENT_ID), code with a class code, else anonymous."""
    if config.sign_in != "auto":
        return config.sign_in
    if os.environ.get("SPACE_ID") and os.environ.get("OAUTH_CLIENT_ID"):
        return "hf"
    return "code" if config.class_code else "anonymous"


def check_hf_sign_in() -> None:
    """Hugging Face sign-in needs a Space with OAuth (hf_oauth: true in its README) and Gradio's oauth extra: off a Space
    Gradio would fall back to the machine's own Hugging Face login for everyone, and without authlib it cannot start."""
    if not os.environ.get("SPACE_ID"):
        raise ConfigError("--sign-in hf works on a Hugging Face Space with hf_oauth: true in its README; here, use "
                          "--sign-in code with --class-code, or anonymous.")
    if importlib.util.find_spec("authlib") is None:
        raise ConfigError('Hugging Face sign-in needs Gradio\'s oauth extra: pip install "gradio[mcp,oauth]==6.31.0" '
                          "(it is in requirements.txt).")


def side_name(adapter: str | None) -> str:
    """How a side of a pair is stored and shown: 'base', or 'adapter NAME' (an adapter may be called 'base')."""
    return BASE if adapter is None else f"adapter {adapter}"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_display_name(name) -> str:
    """A student's display name, its spaces collapsed; ClassError naming the rule."""
    if not isinstance(name, str):
        raise ClassError(f"Your name must be text, got {quote(name)}.")
    name = " ".join(unicodedata.normalize("NFC", name).split())
    if not name:
        raise ClassError("Type your name (as the class knows you) to join.")
    if len(name) > NAME_CHARS or not DISPLAY_NAME.fullmatch(name):
        raise ClassError(f"Your name must be 1 to {NAME_CHARS} letters, digits, spaces, '.', ''', '-' or '_', starting "
                         f"with a letter or digit, got {quote(name)}.")
    return name


@dataclass
class _Session:
    """What the server knows of one page session: who it is (bound by join) and whether it is the teacher's."""

    key: str = ""
    display: str = ""
    kind: str = ""
    token_hash: str = ""
    student_id: int | None = None
    class_id: int | None = None
    teacher: bool = False
    fails: int = 0
    wait_until: float = 0.0


class Classroom:
    """A class's votes, pairs, people and preference models, for one playground (one a process)."""

    def __init__(self, config: AppConfig, service: Playground, store: VoteStore | None = None):
        self.config, self.service = config, service
        self.folder = config.classroom_dir
        self.models_dir = self.folder / "preferences"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.store = store or SQLiteVoteStore(self.folder / "votes.sqlite")
        # Page runs (ipa.training in this process) find the class's models by name: the block reads this folder.
        os.environ[PREFERENCES_ENV] = str(self.models_dir)
        self.sign_in = resolve_sign_in(config)
        if self.sign_in == "hf":
            check_hf_sign_in()
        self._salt = secrets.token_bytes(16)
        self._teacher = self._digest(config.teacher_secret) if config.teacher_secret else None
        self._sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._learning = threading.Lock()
        self.store.current_class()  # the first class exists before the first page loads
        service.on_close.append(self.store.close)

    def _digest(self, secret: str) -> bytes:
        return hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), self._salt, 20_000)

    # --- who is who ------------------------------------------------------------------------------------------
    def _session(self, session: str | None) -> _Session:
        if not isinstance(session, str) or not session:
            raise ClassError("This request has no page session: open the page, or call the API with gradio_client.")
        with self._lock:
            found = self._sessions.get(session)
            if found is None:
                found = self._sessions[session] = _Session()
                while len(self._sessions) > MAX_SESSIONS:
                    self._sessions.popitem(last=False)
            self._sessions.move_to_end(session)
            return found

    def join(self, session: str, code: str = "", name: str = "", token: str = "", hf_user: str | None = None) -> dict:
        """Bind the session to its person (AppConfig.sign_in) and say who that is: {student, token, sign_in, class}.

        hf: hf_user, the Hugging Face username the page's sign-in gave (never a name the request typed). code: the
        class code and a display name; the first browser to join with a name gets a token (kept in the browser) and
        only a request with that token may join as that name again. anonymous: the token is the person (a new one
        when none is given)."""
        lesson = self.store.current_class()
        state = self._session(session)
        if self.sign_in == "hf":
            if not hf_user:
                raise ClassError("Sign in with Hugging Face first (the button at the top of the Class tab).")
            key, display, kind, token = f"hf:{hf_user}", str(hf_user), "hf", ""
        elif self.sign_in == "code":
            check_text(code if isinstance(code, str) else None, "The class code", 200, error=ClassError)
            if not hmac.compare_digest(code.strip().encode("utf-8"), self.config.class_code.encode("utf-8")):
                raise ClassError("That is not this class's code: ask your teacher for it.")
            display = check_display_name(name)
            key, kind = "name:" + display.casefold(), "code"
        else:
            key, display, kind = "", "", "anonymous"  # both from the token, below
        if kind != "hf":
            check_text(token if isinstance(token, str) else None, "The browser's token", 200, error=ClassError)
            token = token.strip() or secrets.token_urlsafe(TOKEN_BYTES)
            if kind == "anonymous":
                key = "anon:" + _hash(token)[:16]
                display = "anonymous-" + _hash(token)[:6]
        token_hash = _hash(token) if token else ""
        student = self.store.student_by_key(lesson.id, key)
        if student is not None and kind == "code" and not hmac.compare_digest(student.token_hash, token_hash):
            raise ClassError(f"The name {display!r} is taken in this class: choose another one (or join from the "
                             "browser you joined with first).")
        if student is None and kind != "anonymous":  # a name is claimed when it joins; an anonymous id when it votes
            student = self._add_student(Student(0, lesson.id, key, display, kind, token_hash))
        with self._lock:
            state.key, state.display, state.kind, state.token_hash = key, display, kind, token_hash
            state.student_id, state.class_id = (student.id if student else None), lesson.id
        return {"student": display, "token": token, "sign_in": self.sign_in, "class": lesson.name}

    def _add_student(self, student: Student) -> Student:
        try:
            return self.store.add_student(student)
        except UserError:  # two tabs of one browser joined at once: the other made it
            found = self.store.student_by_key(student.class_id, student.key)
            if found is None or not hmac.compare_digest(found.token_hash, student.token_hash):
                raise ClassError(f"The name {student.display!r} is taken in this class: choose another one.") from None
            return found

    def student(self, session: str, create: bool = True) -> Student | None:
        """The person the session joined as, in the current class (after "start a new class", the same person joins
        the new one by itself); None before join. create=False: None too for a person not stored yet (an anonymous id
        that has not been shown a pair), so that a refused request stores nothing."""
        state = self._session(session)
        if not state.key:
            return None
        lesson = self.store.current_class()
        if state.student_id is not None and state.class_id == lesson.id:
            return Student(state.student_id, lesson.id, state.key, state.display, state.kind, state.token_hash)
        student = self.store.student_by_key(lesson.id, state.key)
        if student is None and not create:
            return None
        if student is None:
            student = self._add_student(Student(0, lesson.id, state.key, state.display, state.kind, state.token_hash))
        with self._lock:
            state.student_id, state.class_id = student.id, lesson.id
        return student

    def require_student(self, session: str) -> Student:
        """The session's person; in anonymous mode one is made for a session that never joined (an API client); else
        ClassError saying how to sign in."""
        student = self.student(session)
        if student is None and self.sign_in == "anonymous":
            self.join(session)
            student = self.student(session)
        if student is None:
            raise ClassError(self._sign_in_first())
        return student

    def _sign_in_first(self) -> str:
        if self.sign_in == "hf":
            return "Sign in with Hugging Face first (the button at the top of the Class tab): votes belong to a person."
        return "Join the class first (the Class tab: the class code and your name): votes belong to a person."

    def owner(self, session: str | None) -> str | None:
        """Who a training run belongs to: the session's person ('name:ann', 'hf:ann', 'anon:...') once joined, else the
        session itself (the Train tab's rule: one run waiting or running an owner; only its owner stops it)."""
        state = self._session(session) if session else None
        return state.key if state is not None and state.key else session

    def record_run(self, session: str | None, name: str) -> None:
        """Note that the session's person started the run `name` (the teacher's view lists runs by person)."""
        student = self.student(session) if session else None
        if student is not None:
            self.store.add_run(student.class_id, student.id, name)

    # --- the teacher -------------------------------------------------------------------------------------------
    def teacher_sign_in(self, session: str, secret) -> None:
        """Make the session the teacher's; ClassError for a wrong secret (nothing logged but that it was wrong), and a
        wait after TEACHER_TRIES wrong ones."""
        state = self._session(session)
        if time.monotonic() < state.wait_until:
            raise ClassError(f"Too many wrong secrets: wait {state.wait_until - time.monotonic():.0f} s before trying again.")
        if self._teacher is None:
            raise ClassError("This playground was started without a teacher's secret: the teacher's view is open to a "
                             "browser on the machine it runs on (start it with $IPA_TEACHER_SECRET to give one).")
        secret = check_text(secret if isinstance(secret, str) else None, "The teacher's secret", 200, error=ClassError)
        if not hmac.compare_digest(self._digest(secret), self._teacher):
            with self._lock:
                state.fails += 1
                if state.fails >= TEACHER_TRIES:
                    state.fails, state.wait_until = 0, time.monotonic() + TEACHER_WAIT
            log.warning("a wrong teacher's secret was given")  # never the secret, nor what was typed
            raise ClassError("That is not the teacher's secret.")
        with self._lock:
            state.teacher, state.fails = True, 0

    def is_teacher(self, session: str | None, local: bool = False) -> bool:
        if self._teacher is None:
            return local
        return bool(session) and self._session(session).teacher

    def require_teacher(self, session: str | None, local: bool = False) -> None:
        if not self.is_teacher(session, local):
            raise ClassError("Only the teacher may do this: sign in as the teacher first (the Class tab, Teacher)."
                             if self._teacher is not None else
                             "Only the teacher may do this; without a teacher's secret, that is a browser on the machine "
                             "the playground runs on.")

    # --- blind pairs and votes ------------------------------------------------------------------------------------
    def show_pair(self, session: str, task: str, inputs: dict, first: str | None, second: str | None = None,
                  alpha: float | None = None, alpha_2: float | None = None) -> dict:
        """Decode, score and store a blind pair for the session's person: `first` (an adapter: the subject) against
        `second` (None: the base; or another adapter). Returns only {pair, A, B}: the texts in random order."""
        student = self.require_student(session)
        if not first:
            raise ClassError("Choose an adapter to compare: a blind vote puts it against the base (or another adapter).")
        if second == first and (alpha_2 if alpha_2 is not None else alpha) == alpha:
            raise ClassError(f"Both sides would be {first!r} at the same strength: choose the base or another adapter "
                             "to compare it with.")
        shown, _ = self.store.counts(student.class_id).get(student.id, (0, 0))
        if shown >= MAX_PAIRS:
            raise ClassError(f"You have been shown {shown} pairs in this class, the most one person may see: thank you!")
        low, high, _ = Settings.LIMITS["alpha"]
        for value, name in ((alpha, "alpha"), (alpha_2, "alpha_2")):
            if value is not None:
                check_number(value, name, low, high, error=ClassError)
        made = self.service.continuations(task, inputs, [(first, alpha), (second, alpha_2)])
        swap = secrets.randbelow(2) == 1  # the order shown: a coin the page cannot see
        order = [1, 0] if swap else [0, 1]
        sides = [side_name(first), side_name(second)]
        pair = Pair(id=secrets.token_urlsafe(12), class_id=student.class_id, student_id=student.id, task=task,
                    reward=made.reward, inputs=made.inputs, text_a=made.texts[order[0]], text_b=made.texts[order[1]],
                    side_a=sides[order[0]], side_b=sides[order[1]], reward_a=float(made.scores[order[0]]["reward"]),
                    reward_b=float(made.scores[order[1]]["reward"]), alpha_a=made.alphas[order[0]],
                    alpha_b=made.alphas[order[1]], first="B" if swap else "A")
        self.store.add_pair(pair)  # before the page shows it: a vote is checked against this record
        return {"pair": pair.id, "A": pair.text_a, "B": pair.text_b}

    def vote(self, session: str, pair_id, choice, reason="") -> dict:
        """Store the session's person's vote on a pair shown to them, then reveal it: {pair, saved, choice, reason, A: {side,
        reward}, B: ..., reward, reward_choice, agrees}. Refused, nothing stored: a pair never shown, shown to someone
        else or in an ended class, a second vote on a pair, a choice other than A, B or same, a reason over REASON_CHARS."""
        if self.sign_in != "anonymous" and not self._session(session).key:
            raise ClassError(self._sign_in_first())
        student = self.student(session, create=False)  # a person never shown a pair is not stored for a refused vote
        if not isinstance(choice, str) or choice.strip().lower() not in ("a", "b", "same", "about the same"):
            raise ClassError(f"A vote is A, B or same (about the same), got {quote(choice)}.")
        choice = {"a": "A", "b": "B"}.get(choice.strip().lower(), "same")
        reason = check_text(reason if reason is not None else "", "The reason", REASON_CHARS, error=ClassError).strip()
        if not isinstance(pair_id, str) or not 0 < len(pair_id) <= 64:
            raise ClassError(f"pair must be the id the page gave with the two texts, got {quote(pair_id)}.")
        pair = self.store.pair(pair_id)
        if pair is None:
            raise ClassError("There is no such pair: vote on a pair the page showed you (ask for two texts first).")
        if pair.class_id != self.store.current_class().id:
            raise ClassError("This pair belongs to a class that has ended: ask for two new texts.")
        if student is None or pair.student_id != student.id:
            raise ClassError("This pair was shown to someone else: you can vote only on the pairs shown to you.")
        _, cast = self.store.counts(student.class_id).get(student.id, (0, 0))
        if cast >= MAX_VOTES:
            raise ClassError(f"You have cast {cast} votes in this class, the most one person may: thank you!")
        try:
            self.store.add_vote(Vote(pair.id, pair.class_id, student.id, choice, reason))
        except DuplicateVote:
            raise ClassError("You have voted on this pair already (your vote is saved): one vote a pair.") from None
        return self.reveal(pair, choice, reason)

    @staticmethod
    def reward_choice(pair: Pair) -> str:
        """The reward's verdict on a pair: 'A', 'B' or 'same' (closer than REWARD_TIE)."""
        if abs(pair.reward_a - pair.reward_b) < REWARD_TIE:
            return "same"
        return "A" if pair.reward_a > pair.reward_b else "B"

    def reveal(self, pair: Pair, choice: str, reason: str = "") -> dict:
        verdict = self.reward_choice(pair)
        agrees = None if "same" in (choice, verdict) else choice == verdict
        return {"pair": pair.id, "saved": True, "choice": choice, "reason": reason, "reward": pair.reward,
                "A": {"side": pair.side_a, "reward": pair.reward_a}, "B": {"side": pair.side_b, "reward": pair.reward_b},
                "reward_choice": verdict, "agrees": agrees}

    # --- what the class thinks against what the reward thinks ------------------------------------------------------
    def agreement(self) -> list[dict]:
        """One row per (reward, subject, opponent) of the current class's votes: votes, the class's and the reward's win
        rate of the subject with their 95 % intervals, and how often the two agree (ties of either left out)."""
        groups: dict[tuple, dict] = {}
        for vote, pair in self.store.votes(self.store.current_class().id):
            subject, other = (pair.side_a, pair.side_b) if pair.first == "A" else (pair.side_b, pair.side_a)
            row = groups.setdefault((pair.reward, subject, other), collections.Counter())
            row["votes"] += 1
            human, machine = vote.choice, self.reward_choice(pair)
            for who, said in (("class", human), ("reward", machine)):
                row[f"{who}_{'tie' if said == 'same' else 'win' if said == pair.first else 'loss'}"] += 1
            if "same" not in (human, machine):
                row["agree" if human == machine else "disagree"] += 1
        rows = []
        for (reward, subject, other), c in groups.items():
            rate, low, high = win_rate(c["class_win"], c["class_loss"])
            r_rate, r_low, r_high = win_rate(c["reward_win"], c["reward_loss"])
            agree, a_low, a_high = win_rate(c["agree"], c["disagree"])
            rows.append({"reward": reward, "subject": subject, "opponent": other, "votes": c["votes"],
                         "class_wins": c["class_win"], "class_losses": c["class_loss"], "class_ties": c["class_tie"],
                         "class_win_rate": rate, "class_low": low, "class_high": high,
                         "reward_wins": c["reward_win"], "reward_losses": c["reward_loss"], "reward_ties": c["reward_tie"],
                         "reward_win_rate": r_rate, "reward_low": r_low, "reward_high": r_high,
                         "agreement": agree, "agreement_low": a_low, "agreement_high": a_high,
                         "compared": c["agree"] + c["disagree"]})
        return sorted(rows, key=lambda r: (r["reward"], r["subject"], r["opponent"]))

    def leaderboard(self) -> list[dict]:
        """The adapters by the class's win rate against the base (most decisive votes first among equals): adapter,
        its source and owner, the reward it was scored by, votes, win rate and interval."""
        owners = self._run_owners()
        rows = []
        for row in self.agreement():
            if row["opponent"] != BASE or not row["subject"].startswith("adapter "):
                continue
            name = row["subject"].removeprefix("adapter ")
            entry = self.service.adapters.get(name)
            rows.append({"adapter": name, "source": entry.source if entry else "removed", "owner": owners.get(name, ""),
                         "reward": row["reward"], "votes": row["votes"], "decisive": row["class_wins"] + row["class_losses"],
                         "win_rate": row["class_win_rate"], "low": row["class_low"], "high": row["class_high"]})
        return sorted(rows, key=lambda r: (r["win_rate"] is None, -(r["win_rate"] or 0), -r["decisive"]))

    def stats(self) -> dict:
        """Everything the Class tab shows to everyone, as data (the class_stats endpoint)."""
        lesson = self.store.current_class()
        votes = self.store.votes(lesson.id)
        return {"class": lesson.name, "sign_in": self.sign_in, "votes": len(votes),
                "decisive": sum(v.choice != "same" for v, _ in votes), "min_votes": self.config.min_votes,
                "agreement": self.agreement(), "leaderboard": self.leaderboard(), "models": self.models()}

    # --- votes become a reward ---------------------------------------------------------------------------------
    def models(self) -> list[dict]:
        """The preference models learned so far (any class's), oldest first: name, class, votes, held-out agreement."""
        from ipa.rewards.preference import PreferenceModel

        found = []
        for name in list_models(self.models_dir):
            try:
                card = PreferenceModel.load(name, self.models_dir).card
            except UserError:
                continue
            found.append({"name": name, **{k: card.get(k) for k in ("class", "votes", "decisive", "agreement",
                                                                       "agreement_low", "agreement_high", "created")}})
        return found

    def learn(self, session: str | None, name: str = "", local: bool = False) -> dict:
        """Fit a preference model on the current class's votes (the teacher's action) and report its held-out agreement
        with the votes: shown before anyone trains on it. Refused below AppConfig.min_votes decisive votes."""
        self.require_teacher(session, local)
        lesson = self.store.current_class()
        if name:
            name = check_model_name(name.strip()) if isinstance(name, str) else check_model_name(name)
            if name in list_models(self.models_dir):
                raise ClassError(f"A preference model named {name!r} exists already: choose another name.")
        else:
            taken = set(list_models(self.models_dir))
            name = next(f"class-{lesson.id}-{k}" for k in range(1, 10_000) if f"class-{lesson.id}-{k}" not in taken)
        votes = [Judged(p.id, p.text_a, p.text_b, v.choice) for v, p in self.store.votes(lesson.id)]
        from ipa.rewards.resources import sentence_embedder  # the MiniLM the rewards share

        with self._learning:  # seconds of CPU: one at a time
            learned = learn(votes, sentence_embedder(str(self.service.device)), name, self.models_dir,
                            min_votes=self.config.min_votes, card={"class": lesson.name, "class_id": lesson.id})
        log.info("preference model %s learned from %d votes: held-out agreement %.2f", name, learned.votes, learned.agreement)
        return learned.summary()

    def class_prompts(self) -> list[str]:
        """The texts the current class voted on (continuation tasks' inputs), each once, oldest first."""
        texts = [p.inputs.get("text") for _, p in self.store.votes(self.store.current_class().id)]
        return list(dict.fromkeys(t.strip() for t in texts if isinstance(t, str) and t.strip()))

    def train(self, session: str | None, model: str, honest: list[str] | tuple = ("fluency",), minutes: float = 3.0,
              local: bool = False, **settings) -> dict:
        """Queue a run for the objective 'the class's preference `model`' (+ the chosen HONEST_BLOCKS at weight
        HONEST_WEIGHT, which keep it from pleasing the preference model with broken text) on the inputs the class voted
        on (the prompt set "passages" when they are fewer than MIN_FILE_PROMPTS). The run is the Train tab's: its queue,
        limits and access rule; its owner the session's person. settings: more TrainRequest fields (lr, batch_size, ...)."""
        check_model_name(model)
        if model not in list_models(self.models_dir):
            raise ClassError(f"There is no preference model named {model!r}: learn one from the votes first.")
        unknown = [b for b in honest if b not in HONEST_BLOCKS]
        if unknown:
            raise ClassError(f"The blocks that keep a class preference honest are {', '.join(HONEST_BLOCKS)}, got "
                             f"{', '.join(map(quote, unknown))}.")
        blocks = [{"reward": "preference", "model": model, "weight": 1.0}]
        blocks += [{"reward": b, "weight": HONEST_WEIGHT} for b in HONEST_BLOCKS if b in honest]
        prompts = self.class_prompts()
        own = len(prompts) >= MIN_FILE_PROMPTS
        request = TrainRequest(budget="minutes", amount=minutes, objective={"name": model, "blocks": blocks,
                                                                           "prompts": "passages"},
                               prompts_text="\n".join(prompts) if own else "", **settings)
        try:
            snapshot = self.service.start_training(request, owner=self.owner(session), local=local)
        except ObjectiveError as err:
            raise ClassError(str(err)) from None
        self.record_run(session, snapshot["adapter"])
        return {**snapshot, "prompts": "the class's inputs" if own else "passages", "prompt_count": len(prompts)}

    # --- the teacher's view ----------------------------------------------------------------------------------------
    def _run_owners(self) -> dict[str, str]:
        lesson = self.store.current_class()
        people = {s.id: s.display for s in self.store.students(lesson.id)}
        return {name: people.get(student, "") for name, student, _ in self.store.runs(lesson.id)}

    def students(self, session: str | None, local: bool = False) -> list[dict]:
        """Each person of the current class: name, how they signed in, pairs shown, votes cast (teacher only)."""
        self.require_teacher(session, local)
        lesson = self.store.current_class()
        counts = self.store.counts(lesson.id)
        return [{"student": s.display, "sign_in": s.kind, "pairs": counts.get(s.id, (0, 0))[0],
                 "votes": counts.get(s.id, (0, 0))[1], "joined": time.strftime("%H:%M", time.localtime(s.joined))}
                for s in self.store.students(lesson.id)]

    def recent_votes(self, session: str | None, local: bool = False, limit: int = 50) -> list[dict]:
        """The current class's latest votes with their reasons, newest first (teacher only; the page shows them escaped)."""
        self.require_teacher(session, local)
        lesson = self.store.current_class()
        people = {s.id: s.display for s in self.store.students(lesson.id)}
        rows = [{"student": people.get(v.student_id, "?"), "reward": p.reward, "choice": v.choice,
                 "chose": {"A": p.side_a, "B": p.side_b}.get(v.choice, "about the same"), "reason": v.reason,
                 "time": time.strftime("%H:%M:%S", time.localtime(v.created))} for v, p in self.store.votes(lesson.id)]
        return rows[::-1][:limit]

    def runs(self, session: str | None, local: bool = False) -> list[dict]:
        """The class's training runs and the adapters trained or uploaded here, with their owners (teacher only)."""
        self.require_teacher(session, local)
        owners = self._run_owners()
        jobs = {job.name: job for job in list(self.service.training.jobs)}
        rows = []
        for name in dict.fromkeys([*owners, *(n for n, e in list(self.service.adapters.items()) if e.source != SHIPPED), *jobs]):
            job, entry = jobs.get(name), self.service.adapters.get(name)
            snapshot = job.snapshot() if job else {}
            objective = (entry.card.objective or {}).get("name") if entry else None
            rows.append({"run": name, "owner": owners.get(name, ""),
                         "state": snapshot.get("state") or (entry.source if entry else "removed"),
                         "for": f"objective {objective}" if objective else (entry.card.task if entry else snapshot.get("task", "")),
                         "reward_before": snapshot.get("reward_before"), "reward_after": snapshot.get("reward_after")})
        return rows

    def export_rows(self, class_id: int | None = None) -> list[dict]:
        lesson = self.store.current_class() if class_id is None else next(
            (c for c in self.store.classes() if c.id == class_id), None)
        if lesson is None:
            raise ClassError(f"There is no class {class_id}.")
        people = {s.id: s.display for s in self.store.students(lesson.id)}
        return [{"class": lesson.name, "class_id": lesson.id, "pair": p.id, "student": people.get(v.student_id, "?"),
                 "task": p.task, "reward": p.reward, "inputs": p.inputs, "text_a": p.text_a, "text_b": p.text_b,
                 "side_a": p.side_a, "side_b": p.side_b, "reward_a": p.reward_a, "reward_b": p.reward_b,
                 "choice": v.choice, "reason": v.reason, "time": v.created} for v, p in self.store.votes(lesson.id)]

    def export(self, session: str | None, out_dir: Path, local: bool = False) -> Path:
        """The current class's votes as JSONL, one vote a line with its pair (teacher only);
        python -m ipa.preferences.learn --votes FILE learns from it."""
        self.require_teacher(session, local)
        lesson = self.store.current_class()
        path = Path(out_dir) / f"votes-class-{lesson.id}.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.export_rows()), encoding="utf-8")
        return path

    def push_to_hub(self, session: str | None, repo_id, local: bool = False) -> str:
        """The current class's votes as a (private) Hugging Face dataset, where the playground is online and has a token."""
        self.require_teacher(session, local)
        if not isinstance(repo_id, str) or not re.fullmatch(r"[\w.-]{1,96}/[\w.-]{1,96}", repo_id.strip()):
            raise ClassError(f"The dataset must be named OWNER/NAME (letters, digits, '-', '_', '.'), got {quote(repo_id)}.")
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            raise ClassError("This playground is offline (HF_HUB_OFFLINE): download the votes as JSONL instead.")
        from huggingface_hub import HfApi, get_token

        token = get_token()
        if not token:
            raise ClassError("There is no Hugging Face token on the server (set $HF_TOKEN): download the votes as JSONL "
                             "instead.")
        import tempfile

        with tempfile.TemporaryDirectory(prefix="ipa-votes-") as tmp:
            path = self.export(session, Path(tmp), local)
            try:
                api = HfApi(token=token)
                api.create_repo(repo_id.strip(), repo_type="dataset", private=True, exist_ok=True)
                api.upload_file(path_or_fileobj=str(path), path_in_repo="votes.jsonl", repo_id=repo_id.strip(),
                                repo_type="dataset", commit_message="Votes of a class (IPA Playground)")
            except Exception as err:  # noqa: BLE001 - the network, the token, the name: the teacher can act on each
                raise ClassError(f"The Hugging Face Hub did not take the votes ({type(err).__name__}): download them as "
                                 "JSONL instead.") from None
        return f"https://huggingface.co/datasets/{repo_id.strip()}"

    def new_class(self, session: str | None, name, local: bool = False) -> dict:
        """Archive the current class (nothing is deleted: its votes export and learn as before) and start `name`."""
        self.require_teacher(session, local)
        name = check_text(name if isinstance(name, str) else None, "The new class's name", 64, error=ClassError).strip()
        if not name:
            raise ClassError("Name the new class (for example the date of the lesson).")
        old = self.store.current_class()
        lesson = self.store.new_class(name)
        log.info("class %r archived, class %r started", old.name, lesson.name)
        return {"archived": old.name, "class": lesson.name, "class_id": lesson.id}

    def close(self) -> None:
        self.store.close()


__all__ = ["Classroom", "ClassError", "REASON_CHARS", "resolve_sign_in"]
