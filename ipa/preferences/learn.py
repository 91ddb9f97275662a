"""Votes become a reward: a Bradley-Terry model on sentence embeddings, fitted in seconds on a CPU, with its
agreement with held-out votes measured before anyone trains on it.

    python -m ipa.preferences.learn --db runs/classroom/votes.sqlite --name class-1-food     # the current class
    python -m ipa.preferences.learn --votes votes.jsonl --name class-1-food --json           # the teacher's export

The model (ipa.rewards.preference): s(x) = w · e(x), P(a ≻ b) = σ(s(a) − s(b)). Each vote on a pair (a, b) is one
example of logistic regression without intercept on the difference of embeddings,

    x = e(a) − e(b),   y = 1 (a better), 0 (b better), ½ (about the same: the scores are pulled together),
    minimise  mean_i [ −y_i log σ(w·x_i) − (1 − y_i) log σ(−w·x_i) ] + (λ/2) ‖w‖²,

solved by Newton's method (a 384 × 384 system, a few iterations). No intercept: swapping a and b flips the vote, so the
model cannot favour the position a text was shown in. λ = L2: with a few hundred votes and 384 numbers a text, an
unregularised fit would learn the votes by heart.

Held-out agreement: the votes are cut into FOLDS parts by a hash of their pair's id (fixed, whatever order they come
in); each part is predicted by the model fitted on the others, and agreement is the share of its decisive votes (A
or B) whose chosen text gets the higher score, with its 95 % Wilson interval. The model saved is then fitted on all
votes. A class with fewer than min_votes decisive votes is refused: agreement on a handful of votes says nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ipa.errors import UserError, check_number
from ipa.preferences.store import CHOICES
from ipa.rewards.preference import PreferenceModel, check_model_name, preference_dir
from ipa.tasks.metrics import win_rate

MIN_VOTES = 30
"""Decisive votes (A or B) a preference model needs: 30 is where a 95 % interval of the agreement gets narrower
than ± 0.18 and can tell a learned preference (0.8) from a coin (0.5)."""
FOLDS = 5
L2 = 1e-3
"""λ, fixed rather than chosen on the votes, so that the held-out agreement is not flattered by the choice."""
NEWTON_STEPS = 30


class NotEnoughVotes(UserError):
    """Too few decisive votes to learn from; the message says how many there are and how many are needed."""


@dataclass(frozen=True)
class Judged:
    """One vote as the learner reads it: the two texts in the order shown, and the choice."""

    pair_id: str
    text_a: str
    text_b: str
    choice: str
    """One of ipa.preferences.store.CHOICES: 'A', 'B' or 'same'."""


@dataclass(frozen=True)
class Learned:
    """A fitted model and how well it predicts votes it was not fitted on."""

    model: PreferenceModel
    votes: int
    decisive: int
    agreement: float | None
    agreement_low: float | None
    agreement_high: float | None
    seconds: float

    def summary(self) -> dict:
        return {"name": self.model.name, "votes": self.votes, "decisive": self.decisive, "agreement": self.agreement,
                "agreement_low": self.agreement_low, "agreement_high": self.agreement_high, "seconds": round(self.seconds, 2)}


def fold_of(pair_id: str, folds: int = FOLDS) -> int:
    """A vote's held-out part, from its pair's id (SHA-1: the same on every machine and in every run)."""
    return int.from_bytes(hashlib.sha1(pair_id.encode("utf-8")).digest()[:4], "big") % folds


def targets(choices: list[str]) -> torch.Tensor:
    """1 for A, 0 for B, ½ for about the same."""
    bad = [c for c in choices if c not in CHOICES]
    if bad:
        raise ValueError(f"A vote's choice is one of {', '.join(CHOICES)}, got {bad[0]!r}.")
    return torch.tensor([{"A": 1.0, "B": 0.0, "same": 0.5}[c] for c in choices], dtype=torch.float64)


def fit(x: torch.Tensor, y: torch.Tensor, l2: float = L2) -> torch.Tensor:
    """w minimising the regularised logistic loss of the module's docstring (Newton's method, float64).

    >>> x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> w = fit(x, torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64), l2=0.1)
    >>> bool(w[0] > 1.0), abs(float(w[1])) < 1e-9        # the first coordinate decides, the tie pulls nothing
    (True, True)
    """
    n, d = x.shape
    w = torch.zeros(d, dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64)
    for _ in range(NEWTON_STEPS):
        p = torch.sigmoid(x @ w)
        gradient = x.T @ (p - y) / n + l2 * w
        hessian = (x.T * (p * (1 - p))) @ x / n + l2 * eye
        step = torch.linalg.solve(hessian, gradient)
        w = w - step
        if float(step.abs().max()) < 1e-9:
            break
    return w


def held_out_agreement(x: torch.Tensor, y: torch.Tensor, folds: torch.Tensor, l2: float = L2) -> tuple[int, int]:
    """(agreeing, disagreeing) decisive votes, each predicted by the model fitted on the other folds."""
    agree = disagree = 0
    for k in sorted(set(folds.tolist())):
        test, train = folds == k, folds != k
        if not bool(train.any()):
            continue
        w = fit(x[train], y[train], l2)
        margin = x[test] @ w
        decisive = y[test] != 0.5
        chose_a = y[test][decisive] == 1.0
        said_a = margin[decisive] > 0
        agree += int((chose_a == said_a).sum())
        disagree += int((chose_a != said_a).sum())
    return agree, disagree


def learn(votes: list[Judged], embedder, name: str, folder: str | Path | None = None, *, min_votes: int = MIN_VOTES,
          l2: float = L2, card: dict | None = None, save: bool = True) -> Learned:
    """Fit and (save=True) save the preference model `name` from the votes; NotEnoughVotes below min_votes decisive
    ones. embedder: a SentenceEmbedder (ipa.rewards.resources; the one the reward will use). card: more facts to keep
    with the model (the class it came from)."""
    started = time.perf_counter()
    check_model_name(name)
    decisive = sum(v.choice in ("A", "B") for v in votes)
    if decisive < min_votes:
        raise NotEnoughVotes(f"The class has cast {decisive} decisive vote{'s' * (decisive != 1)} (A or B; "
                             f"{len(votes) - decisive} said about the same); a preference reward needs at least "
                             f"{min_votes}: vote on more pairs first.")
    texts = list(dict.fromkeys(t for v in votes for t in (v.text_a, v.text_b)))
    index = {t: i for i, t in enumerate(texts)}
    embeddings = embedder.encode(texts).double()
    a = embeddings[[index[v.text_a] for v in votes]]
    b = embeddings[[index[v.text_b] for v in votes]]
    x, y = a - b, targets([v.choice for v in votes])
    agree, disagree = held_out_agreement(x, y, torch.tensor([fold_of(v.pair_id) for v in votes]), l2)
    rate, low, high = win_rate(agree, disagree)
    w = fit(x, y, l2)
    offset = float((embeddings @ w).mean())
    facts = {**(card or {}), "votes": len(votes), "decisive": decisive, "held_out_votes": agree + disagree,
             "agreement": rate, "agreement_low": low, "agreement_high": high, "l2": l2, "folds": FOLDS,
             "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    model = PreferenceModel(name, w.float(), offset, facts)
    if save:
        model.save(folder)
    return Learned(model, len(votes), decisive, rate, low, high, time.perf_counter() - started)


# --- the command line --------------------------------------------------------------------------------------------


def read_jsonl(path: str | Path) -> list[Judged]:
    """Votes from the teacher's export (app.classroom: one JSON object a line with pair, text_a, text_b, choice)."""
    votes = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            votes.append(Judged(str(row["pair"]), row["text_a"], row["text_b"], row["choice"]))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"{path}, line {n}: not a vote of the class export ({type(err).__name__}: {err}).") from None
    return votes


def read_store(path: str | Path, class_id: int | None = None) -> tuple[list[Judged], dict]:
    from ipa.preferences.store import SQLiteVoteStore

    if not Path(path).is_file():
        raise UserError(f"There is no vote database at {path}.")
    store = SQLiteVoteStore(path)
    try:
        lesson = store.current_class() if class_id is None else next((c for c in store.classes() if c.id == class_id), None)
        if lesson is None:
            raise UserError(f"{path} has no class {class_id}: it has {', '.join(str(c.id) for c in store.classes())}.")
        votes = [Judged(p.id, p.text_a, p.text_b, v.choice) for v, p in store.votes(lesson.id)]
        return votes, {"class": lesson.name, "class_id": lesson.id}
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipa.preferences.learn", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", help="the playground's vote database (runs/classroom/votes.sqlite)")
    source.add_argument("--votes", help="a class's votes as exported from the teacher's view (JSONL)")
    parser.add_argument("--class-id", type=int, default=None, help="with --db: the class (default: the current one)")
    parser.add_argument("--name", required=True, help="the model's name, which objectives use: {\"reward\": \"preference\", "
                                                      "\"model\": NAME}")
    parser.add_argument("--out", default=None, help=f"where models are kept (default ${'IPA_PREFERENCES_DIR'} or "
                                                    "runs/classroom/preferences)")
    parser.add_argument("--min-votes", type=int, default=MIN_VOTES)
    parser.add_argument("--l2", type=float, default=L2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        check_number(args.l2, "--l2", 0, None, error=UserError)
        check_number(args.min_votes, "--min-votes", 1, None, whole=True, error=UserError)
        votes, card = (read_store(args.db, args.class_id) if args.db else (read_jsonl(args.votes), {"source": Path(args.votes).name}))
        from ipa.rewards.resources import sentence_embedder

        learned = learn(votes, sentence_embedder("cpu"), args.name, args.out, min_votes=args.min_votes, l2=args.l2, card=card)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = {**learned.summary(), "folder": str(Path(args.out or preference_dir()) / args.name)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{args.name}: {learned.decisive} decisive votes of {learned.votes}; held-out agreement "
              f"{learned.agreement:.2f} (95 % interval {learned.agreement_low:.2f}-{learned.agreement_high:.2f}); "
              f"saved in {summary['folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
