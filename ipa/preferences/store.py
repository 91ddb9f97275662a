"""Where a class's votes live: one small interface (VoteStore) and its embedded implementation, SQLite in WAL mode.

    >>> store = SQLiteVoteStore("runs/classroom/votes.sqlite")                        # doctest: +SKIP
    >>> lesson = store.current_class()                                                # doctest: +SKIP
    >>> ann = store.add_student(Student(0, lesson.id, "name:ann", "Ann", "code"))      # doctest: +SKIP
    >>> store.add_pair(Pair("p1", lesson.id, ann.id, "sentiment", ...))              # doctest: +SKIP
    >>> store.add_vote(Vote("p1", lesson.id, ann.id, "A", "it talks about food"))     # doctest: +SKIP

What is stored: classes (one is current; "start a new class" archives it, nothing is deleted), the students of each
class, every pair of texts the page showed (to whom, which side was which, the reward of each: the record a vote
is checked against, so a vote on a pair never shown is refused), and one vote at most per pair (the database's
primary key says so, not a check that two requests could both pass).

Durability: add_vote returns only once its transaction is committed with synchronous=FULL (the WAL is on disk,
fsync'd), so a vote the page acknowledged survives the app being killed (kill -9) or the machine losing power. WAL
lets the teacher's view read while students write. One connection a process, behind a lock: Gradio's handler
threads take turns, each write a millisecond or two.

Another database: implement VoteStore (a server database for a school-wide playground); app/classroom.py uses only
these methods.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ipa.errors import UserError

CHOICES = ("A", "B", "same")
"""A vote: the text shown as A is better, B is, or they are about the same."""


class StoreError(UserError):
    """The vote store cannot do what was asked (a duplicate vote, an unreadable database); the message says why."""


class DuplicateVote(StoreError):
    """The pair has a vote already: one vote a pair."""


@dataclass(frozen=True)
class ClassRecord:
    """One class (a lesson): its votes and students belong to it."""

    id: int
    name: str
    started: float
    archived: float | None = None
    """When "start a new class" archived it (None: the current class)."""


@dataclass(frozen=True)
class Student:
    """A person of a class, as the page knows them."""

    id: int
    class_id: int
    key: str
    """Who it is, unique in a class: 'hf:USERNAME', 'name:DISPLAY NAME' (case-folded) or 'anon:HASH'."""
    display: str
    """The name the teacher's view shows (escaped there)."""
    kind: str
    """'hf' (Hugging Face sign-in), 'code' (class code and a display name) or 'anonymous' (an id kept in the browser)."""
    token_hash: str = ""
    """SHA-256 of the secret the student's browser keeps (code and anonymous students): a name is claimed by the first
    browser that joins with it, and only that browser may vote as it. Never the secret itself."""
    joined: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Pair:
    """Two continuations of one input as the page showed them to one student, in the order shown."""

    id: str
    """Random and unguessable (app.classroom): a student cannot vote on a pair shown to someone else by guessing it."""
    class_id: int
    student_id: int
    task: str
    """The tab's task ('custom' for an objective's adapter)."""
    reward: str
    """What scored both texts: the task's name or 'objective NAME'."""
    inputs: dict
    text_a: str
    text_b: str
    side_a: str
    """'base' or 'adapter NAME' (what wrote the text shown as A)."""
    side_b: str
    reward_a: float
    reward_b: float
    alpha_a: float = 0.0
    alpha_b: float = 0.0
    first: str = "A"
    """Which shown text came from the comparison's subject: the adapter against the base, or the adapter a student
    chose against the one it is compared with ('A' or 'B'; the order shown is random)."""
    created: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Vote:
    pair_id: str
    class_id: int
    student_id: int
    choice: str
    """One of CHOICES."""
    reason: str = ""
    created: float = field(default_factory=time.time)


class VoteStore(ABC):
    """What the playground asks of a vote store. Every write is durable when the method returns."""

    @abstractmethod
    def current_class(self) -> ClassRecord:
        """The class votes go to now (the first is made on first use)."""

    @abstractmethod
    def new_class(self, name: str) -> ClassRecord:
        """Archive the current class (its votes, pairs and students stay, marked archived) and start `name`."""

    @abstractmethod
    def classes(self) -> list[ClassRecord]:
        """Every class, oldest first."""

    @abstractmethod
    def add_student(self, student: Student) -> Student:
        """Store a new student (its id is assigned); StoreError if its key is taken in its class."""

    @abstractmethod
    def student_by_key(self, class_id: int, key: str) -> Student | None: ...

    @abstractmethod
    def students(self, class_id: int) -> list[Student]: ...

    @abstractmethod
    def add_pair(self, pair: Pair) -> None: ...

    @abstractmethod
    def pair(self, pair_id: str) -> Pair | None: ...

    @abstractmethod
    def add_vote(self, vote: Vote) -> None:
        """Store a vote; DuplicateVote when its pair has one. Durable (committed to disk) when it returns."""

    @abstractmethod
    def vote(self, pair_id: str) -> Vote | None: ...

    @abstractmethod
    def votes(self, class_id: int) -> list[tuple[Vote, Pair]]:
        """The class's votes with the pairs they judged, oldest first."""

    @abstractmethod
    def counts(self, class_id: int) -> dict[int, tuple[int, int]]:
        """Student id -> (pairs shown, votes cast) in the class."""

    @abstractmethod
    def add_run(self, class_id: int, student_id: int, name: str) -> None:
        """Record that a student of the class started the training run (and adapter) `name`."""

    @abstractmethod
    def runs(self, class_id: int) -> list[tuple[str, int, float]]:
        """(run name, student id, when) of the class's runs, oldest first."""

    def close(self) -> None:
        """Release the database (a no-op where there is nothing to release)."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS classes (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, started REAL NOT NULL, archived REAL);
CREATE TABLE IF NOT EXISTS students (
    id INTEGER PRIMARY KEY, class_id INTEGER NOT NULL REFERENCES classes(id), key TEXT NOT NULL, display TEXT NOT NULL,
    kind TEXT NOT NULL, token_hash TEXT NOT NULL DEFAULT '', joined REAL NOT NULL, UNIQUE (class_id, key));
CREATE TABLE IF NOT EXISTS pairs (
    id TEXT PRIMARY KEY, class_id INTEGER NOT NULL REFERENCES classes(id), student_id INTEGER NOT NULL REFERENCES students(id),
    task TEXT NOT NULL, reward TEXT NOT NULL, inputs TEXT NOT NULL, text_a TEXT NOT NULL, text_b TEXT NOT NULL,
    side_a TEXT NOT NULL, side_b TEXT NOT NULL, reward_a REAL NOT NULL, reward_b REAL NOT NULL,
    alpha_a REAL NOT NULL, alpha_b REAL NOT NULL, first TEXT NOT NULL CHECK (first IN ('A', 'B')), created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS pairs_by_student ON pairs (class_id, student_id);
CREATE TABLE IF NOT EXISTS votes (
    pair_id TEXT PRIMARY KEY REFERENCES pairs(id), class_id INTEGER NOT NULL REFERENCES classes(id),
    student_id INTEGER NOT NULL REFERENCES students(id), choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'same')),
    reason TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS votes_by_class ON votes (class_id, created);
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY, class_id INTEGER NOT NULL REFERENCES classes(id), student_id INTEGER NOT NULL REFERENCES students(id),
    created REAL NOT NULL);
"""
FIRST_CLASS = "class 1"


class SQLiteVoteStore(VoteStore):
    """VoteStore on one SQLite file: WAL journal, synchronous=FULL, foreign keys on."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise StoreError(f"The vote database {self.path.name} cannot be opened ({err}): move it aside to start "
                             "an empty one.") from None
        if mode.lower() != "wal":
            raise StoreError(f"The vote database {self.path.name} could not switch to WAL mode (got {mode!r}): keep it "
                             "on a local disk.")
        self._lock = threading.Lock()

    def _write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(sql, args)
                self._db.execute("COMMIT")
                return cursor
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @property
    def journal_mode(self) -> str:
        return self._read("PRAGMA journal_mode")[0][0]

    # --- classes ---------------------------------------------------------------------------------------------
    def current_class(self) -> ClassRecord:
        rows = self._read("SELECT id, name, started, archived FROM classes WHERE archived IS NULL ORDER BY id DESC LIMIT 1")
        if rows:
            return ClassRecord(*rows[0])
        with self._lock:  # the first class, once, even when two threads ask together
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute("SELECT id, name, started, archived FROM classes WHERE archived IS NULL").fetchall()
                if not rows:
                    self._db.execute("INSERT INTO classes (name, started) VALUES (?, ?)", (FIRST_CLASS, time.time()))
                    rows = self._db.execute("SELECT id, name, started, archived FROM classes WHERE archived IS NULL").fetchall()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ClassRecord(*rows[0])

    def new_class(self, name: str) -> ClassRecord:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("UPDATE classes SET archived = ? WHERE archived IS NULL", (now,))
                cursor = self._db.execute("INSERT INTO classes (name, started) VALUES (?, ?)", (name, now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ClassRecord(cursor.lastrowid, name, now)

    def classes(self) -> list[ClassRecord]:
        return [ClassRecord(*row) for row in self._read("SELECT id, name, started, archived FROM classes ORDER BY id")]

    # --- students --------------------------------------------------------------------------------------------
    def add_student(self, student: Student) -> Student:
        try:
            cursor = self._write("INSERT INTO students (class_id, key, display, kind, token_hash, joined) VALUES (?, ?, ?, ?, ?, ?)",
                                 (student.class_id, student.key, student.display, student.kind, student.token_hash,
                                  student.joined))
        except sqlite3.IntegrityError:
            raise StoreError(f"{student.display!r} has joined this class already.") from None
        return Student(cursor.lastrowid, student.class_id, student.key, student.display, student.kind, student.token_hash,
                       student.joined)

    _STUDENT = "SELECT id, class_id, key, display, kind, token_hash, joined FROM students"

    def student_by_key(self, class_id: int, key: str) -> Student | None:
        rows = self._read(f"{self._STUDENT} WHERE class_id = ? AND key = ?", (class_id, key))
        return Student(*rows[0]) if rows else None

    def students(self, class_id: int) -> list[Student]:
        return [Student(*row) for row in self._read(f"{self._STUDENT} WHERE class_id = ? ORDER BY id", (class_id,))]

    # --- pairs and votes -------------------------------------------------------------------------------------
    _PAIR_COLUMNS = ("id", "class_id", "student_id", "task", "reward", "inputs", "text_a", "text_b", "side_a", "side_b",
                     "reward_a", "reward_b", "alpha_a", "alpha_b", "first", "created")

    def add_pair(self, pair: Pair) -> None:
        row = asdict(pair)
        row["inputs"] = json.dumps(pair.inputs, ensure_ascii=False)
        self._write(f"INSERT INTO pairs ({', '.join(self._PAIR_COLUMNS)}) VALUES ({', '.join('?' * len(self._PAIR_COLUMNS))})",
                    tuple(row[c] for c in self._PAIR_COLUMNS))

    @classmethod
    def _pair(cls, row: tuple) -> Pair:
        values = dict(zip(cls._PAIR_COLUMNS, row))
        values["inputs"] = json.loads(values["inputs"])
        return Pair(**values)

    def pair(self, pair_id: str) -> Pair | None:
        rows = self._read(f"SELECT {', '.join(self._PAIR_COLUMNS)} FROM pairs WHERE id = ?", (pair_id,))
        return self._pair(rows[0]) if rows else None

    def add_vote(self, vote: Vote) -> None:
        try:
            self._write("INSERT INTO votes (pair_id, class_id, student_id, choice, reason, created) VALUES (?, ?, ?, ?, ?, ?)",
                        (vote.pair_id, vote.class_id, vote.student_id, vote.choice, vote.reason, vote.created))
        except sqlite3.IntegrityError as err:
            if "UNIQUE" in str(err) or "PRIMARY KEY" in str(err):
                raise DuplicateVote("This pair has a vote already: one vote a pair.") from None
            raise StoreError(f"The vote was not stored: {err}.") from None

    _VOTE = "SELECT pair_id, class_id, student_id, choice, reason, created FROM votes"

    def vote(self, pair_id: str) -> Vote | None:
        rows = self._read(f"{self._VOTE} WHERE pair_id = ?", (pair_id,))
        return Vote(*rows[0]) if rows else None

    def votes(self, class_id: int) -> list[tuple[Vote, Pair]]:
        columns = ", ".join(f"p.{c}" for c in self._PAIR_COLUMNS)
        rows = self._read(f"SELECT v.pair_id, v.class_id, v.student_id, v.choice, v.reason, v.created, {columns} "
                          "FROM votes v JOIN pairs p ON p.id = v.pair_id WHERE v.class_id = ? ORDER BY v.created, v.rowid",
                          (class_id,))
        return [(Vote(*row[:6]), self._pair(row[6:])) for row in rows]

    def counts(self, class_id: int) -> dict[int, tuple[int, int]]:
        shown = dict(self._read("SELECT student_id, COUNT(*) FROM pairs WHERE class_id = ? GROUP BY student_id", (class_id,)))
        cast = dict(self._read("SELECT student_id, COUNT(*) FROM votes WHERE class_id = ? GROUP BY student_id", (class_id,)))
        return {s: (shown.get(s, 0), cast.get(s, 0)) for s in sorted(set(shown) | set(cast))}

    def add_run(self, class_id: int, student_id: int, name: str) -> None:
        self._write("INSERT OR REPLACE INTO runs (name, class_id, student_id, created) VALUES (?, ?, ?, ?)",
                    (name, class_id, student_id, time.time()))

    def runs(self, class_id: int) -> list[tuple[str, int, float]]:
        return [tuple(row) for row in self._read("SELECT name, student_id, created FROM runs WHERE class_id = ? ORDER BY created",
                                                 (class_id,))]

    def close(self) -> None:
        with self._lock:
            self._db.close()
