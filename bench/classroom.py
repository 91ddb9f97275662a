"""A simulated class: the app started as a user starts it, 30 students voting blind through gradio_client by a taste the
shipped rewards do not measure, the votes learned into a reward, an adapter trained on it on the CPU, the class voting
again on what it produced.

    python -m bench.classroom --students 30 --votes-per-student 20 --train-minutes 3 --json
    python -m bench.classroom --students 4 --votes-per-student 10 --train-minutes 0.2 --min-votes 10 --no-kill  # a smoke run

The hidden taste: a student prefers the continuation with more words about food (FOOD: meals, dishes, ingredients,
eating and cooking; a word list, which no shipped reward reads), says "about the same" when both have as many, and
flips 10 % of their votes at random (A and B swapped, a "same" made A or B). The phases, each timed:

1. start: `python app.py` with a class code (the teacher's secret in $IPA_TEACHER_SECRET), until it answers HTTP 200.
2. alone: one Generate request (the sentiment tab, the shipped adapter, n = 1, 20 tokens) with nothing else running,
   median of 3 after a warm-up.
3. class: each student its own gradio_client Client (its own session), joins with the code and a name, then votes
   --votes-per-student times on the sentiment tab's blind pairs (base against the shipped sentiment adapter) of
   everyday sentence starts (PROMPTS); every third student also presses Generate every fifth vote (those latencies
   give p95_over_alone); each student also asks for --held-out-per-student pairs it never votes on (the held-out pairs
   of preference_accuracy). Unless --no-kill, the app is killed (SIGKILL) once half the votes are acknowledged, and
   started again: students join again with their token and vote on (a vote whose answer was lost is sent again, and
   "already voted" then confirms it was stored).
4. learn: the teacher (the secret) learns a preference model from the stored votes (class_learn); the bench then scores
   the held-out pairs with it (ipa.rewards.preference, the same MiniLM) against the hidden taste without flips:
   preference_accuracy, ties of the taste left out.
5. train: class_train, the preference (+ fluency at half weight: --honest) on the inputs the class voted on, for
   --train-minutes of training on the CPU (model loading and the before/after evaluation are outside the budget).
6. judge: the students vote (by the same hidden taste, flips included) on the new adapter against the base in "Try
   your adapters" (vote_pair_try) on the training run's held-back prompts: win_rate_after, ties excluded.
   win_rate_before is the same share in phase 3's votes (the shipped sentiment adapter against the base).

Targets (issue 24): votes_stored == votes_sent (also across the kill); preference_accuracy >= 0.85; win_rate_after >=
0.65; p95_over_alone <= 3. One JSON object on stdout with --json (progress on stderr); --out writes the section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable

from bench.decode import write_section
from bench.serve import StartupError, free_port, percentile, stop_app, tail

REPO_ROOT = Path(__file__).resolve().parent.parent
HEADING = "A simulated class (bench.classroom)"
CODE = "owl-42"
FLIP = 0.10
TOKENS = 20
MODEL = "class-food"

FOOD = frozenset("""
food foods meal meals breakfast lunch dinner supper brunch snack snacks dessert desserts feast picnic barbecue
eat eats ate eaten eating dine dined dining cook cooks cooked cooking bake baked baking bakery chef chefs kitchen
restaurant restaurants cafe café diner menu recipe recipes dish dishes plate plates bowl bowls
bread toast sandwich sandwiches pizza pasta noodles rice soup soups salad salads stew curry burger burgers fries chips
cheese butter milk cream yogurt egg eggs bacon ham sausage sausages chicken beef pork lamb fish salmon tuna shrimp
meat steak turkey apple apples banana bananas orange oranges lemon lemons strawberry strawberries berries grapes
peach peaches pear pears cherry cherries mango fruit fruits vegetable vegetables veggies potato potatoes tomato
tomatoes carrot carrots onion onions garlic pepper peppers beans corn peas mushroom mushrooms lettuce spinach
cake cakes cookie cookies biscuit biscuits pie pies chocolate candy sweets sugar honey jam pancake pancakes waffles
muffin muffins pudding coffee tea juice lemonade soda wine beer cocoa delicious tasty tasted taste tastes flavour
flavor flavours flavors spicy savory savoury yummy hungry appetite groceries grocery
""".split())
"""The hidden taste's words: no shipped reward reads a word list of food (sentiment reads VADER's lexicon, topic a
description the user gives)."""
WORD = re.compile(r"[^\W\d_]+")

PROMPTS = [
    "On Saturday morning my sister and I", "After the football match, the whole team", "When I got home from school, my mother",
    "The trip to the coast was long, and when we arrived", "My grandfather always says that the best part of winter is",
    "The new neighbours moved in last week, and yesterday they", "Before the concert started, we",
    "During the long drive home, we stopped", "For my birthday this year, I want", "At the end of a busy day, I like to",
    "The festival in the town square was crowded, and", "When the power went out last night, we",
    "My best friend called me this morning and said", "On the first warm day of spring, the park",
    "The teacher asked us to write about our weekend, so I wrote that", "Every Sunday, my family",
    "The hotel was small, but in the morning", "After the exam, my classmates and I", "When visitors come to our town, they usually",
    "The best memory from my holiday is", "My little brother woke up early and", "The office party started at six, and",
    "We spent the whole afternoon at the lake, and then", "When my aunt visits, she always", "The market on the corner opens at seven, and",
    "On the way to work, I noticed", "Our camping trip went wrong when", "The wedding was beautiful, and after the ceremony",
    "My roommate left a note on the door that said", "The old house at the end of the street", "I have never been so tired as the day",
    "Last night the whole village gathered to", "The ferry was late, so we", "Grandma's favourite part of the holiday is",
    "When the snow finally stopped, the children", "The first thing I do when I wake up is", "At the museum, our guide told us",
    "The train broke down halfway, and the passengers", "My dad's new hobby is", "We celebrated the end of the school year by",
    "The night before the trip, I packed", "The small café near the station", "After the storm, our street",
    "When we moved to the city, the hardest thing was", "On my first day as a volunteer, I", "The best part of the road trip was",
    "My neighbour knocked on the door and asked", "The hiking trail ended at a small village where", "On rainy days, my friends and I",
    "The school fair raised money by", "I will never forget the evening when", "Our new flat is tiny, but the kitchen",
    "The bus was full, so I", "Every summer, my cousins and I", "The guests arrived early, and", "When my team won the match, we",
    "After the long meeting, everyone", "My mother's advice for a bad day is", "The little shop on the harbour sells",
    "We woke up to the smell of", "The farmer showed us around and", "Before the guests left, we",
]
"""Everyday sentence starts, as students would type: food may come up in a continuation, or not."""


def food_words(text: str) -> int:
    return sum(word.lower() in FOOD for word in WORD.findall(text))


def taste(a: str, b: str) -> str:
    """The hidden taste without noise: the text with more food words, or 'same'."""
    fa, fb = food_words(a), food_words(b)
    return "same" if fa == fb else "A" if fa > fb else "B"


def noisy_vote(a: str, b: str, rng: random.Random) -> str:
    choice = taste(a, b)
    if rng.random() < FLIP:
        choice = {"A": "B", "B": "A"}.get(choice) or rng.choice("AB")
    return choice


class App:
    """The app as a subprocess: started, killed (SIGKILL) and started again with the same flags and folders."""

    def __init__(self, flags: list[str], env: dict, log_path: str):
        self.flags, self.env, self.log_path = flags, env, log_path
        self.port = free_port()
        self.proc = None
        self.up = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> float:
        started = time.perf_counter()
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "app.py", "--port", str(self.port), *self.flags], cwd=REPO_ROOT,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while True:
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise StartupError(f"the app exited with code {self.proc.returncode}; its log:\n{tail(self.log_path)}")
            if time.perf_counter() - started > 600:
                raise StartupError(f"the app did not answer within 600 s; its log:\n{tail(self.log_path)}")
            time.sleep(0.2)
        self.up.set()
        return time.perf_counter() - started

    def kill(self) -> None:
        self.up.clear()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_app(self.proc)


def say(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def generate_request(client, seed: int):
    return client.predict(text=PROMPTS[seed % len(PROMPTS)], adapter="sentiment", alpha=1.0, n=1, max_new_tokens=TOKENS,
                          temperature=1.0, top_p=0.9, seed=seed, api_name="/generate_sentiment")


class Student:
    """One student: a Client of its own, joined with the code, a name and (after the first join) its token."""

    def __init__(self, app: App, index: int, seed: int):
        self.app, self.index = app, index
        self.name = f"Student {index + 1:02d}"
        self.rng = random.Random(seed * 1000 + index)
        self.token = ""
        self.client = None
        for attempt in range(30):  # thirty browsers opening the page at once on a busy machine: some time out
            try:
                self.connect()
                return
            except Exception as err:  # noqa: BLE001 - again, a little later
                say(f"{self.name}: joining failed ({type(err).__name__}), again in {2 + attempt} s")
                time.sleep(2 + attempt)
        raise RuntimeError(f"{self.name} could not join")

    def connect(self) -> None:
        from gradio_client import Client

        self.app.up.wait()
        self.client = Client(self.app.url, verbose=False)
        joined = self.client.predict(code=CODE, name=self.name, token=self.token, api_name="/class_join")
        self.token = joined["token"]

    def call(self, *args, **kwargs):
        """A request that survives the app being killed: on a connection error, wait for it, join again (as a page
        reload does), send again; likewise when the restarted app does not know the session yet."""
        from gradio_client.exceptions import AppError

        for attempt in range(20):
            try:
                return self.client.predict(*args, **kwargs)
            except AppError as err:
                if "Join the class first" not in str(err):
                    raise
            except Exception:  # noqa: BLE001 - the app is down (killed) or restarting: wait, then again
                time.sleep(1 + attempt)
            try:
                self.connect()
            except Exception:  # noqa: BLE001 - still down
                continue
        raise RuntimeError(f"{self.name}: the app did not come back")


def every_student(student: Callable[[int], None], n: int) -> None:
    """student(i) for i < n, each in its own thread, all at once; returns when all are done."""
    threads = [threading.Thread(target=student, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def class_phase(app: App, args, students: list) -> dict:
    """Phase 3: the class votes (and some generate); the app killed once half the votes are acknowledged."""
    from gradio_client.exceptions import AppError

    total = args.students * args.votes_per_student
    lock = threading.Lock()
    sent, generate_latencies, held_out, class_votes, errors = [], [], [], [], []
    killed = {"at": None, "restart_s": None}

    def maybe_kill():
        with lock:
            due = not args.no_kill and killed["at"] is None and len(sent) >= total // 2
            if due:
                killed["at"] = len(sent)
        if due:
            say(f"kill -9 after {killed['at']} acknowledged votes")
            app.kill()
            killed["restart_s"] = round(app.start(), 1)
            say(f"restarted in {killed['restart_s']} s")

    def student(i: int):
        try:
            person = students[i] = Student(app, i, args.seed)
            for k in range(args.votes_per_student + args.held_out_per_student):
                prompt = person.rng.choice(PROMPTS)
                pair = person.call(task="sentiment", inputs={"text": prompt}, adapter="sentiment", alpha=1.0,
                                   api_name="/vote_pair")
                if k >= args.votes_per_student:  # asked for, never voted on: held out from the learning
                    with lock:
                        held_out.append((pair["A"], pair["B"]))
                    continue
                choice = noisy_vote(pair["A"], pair["B"], person.rng)
                reason = "it talks about food" if taste(pair["A"], pair["B"]) != "same" else ""
                try:
                    reveal = person.call(pair=pair["pair"], choice=choice, reason=reason, api_name="/vote")
                    subject = reveal[choice]["side"] if choice != "same" else None
                except AppError as err:
                    if "already" not in str(err):  # sent before the kill, stored, its answer lost: it counts
                        raise
                    subject = None
                with lock:
                    sent.append(pair["pair"])
                    class_votes.append((choice, subject))
                maybe_kill()
                if i % 3 == 0 and k % 5 == 4:
                    started = time.perf_counter()
                    person.call(text=prompt, adapter="sentiment", alpha=1.0, n=1, max_new_tokens=TOKENS, temperature=1.0,
                                top_p=0.9, seed=k, api_name="/generate_sentiment")
                    with lock:
                        generate_latencies.append(time.perf_counter() - started)
        except Exception as err:  # noqa: BLE001 - reported in the result
            say(f"student {i + 1} stopped: {type(err).__name__}: {err}"[:300])
            with lock:
                errors.append(f"student {i + 1}: {type(err).__name__}: {err}"[:300])

    started = time.perf_counter()
    every_student(student, args.students)
    wins = sum(1 for c, s in class_votes if s == "adapter sentiment")
    losses = sum(1 for c, s in class_votes if s == "base")
    return {"seconds": time.perf_counter() - started, "sent": sent, "generate": generate_latencies, "held_out": held_out,
            "wins": wins, "losses": losses, "errors": errors, **killed}


def judge_phase(app: App, args, students: list, adapter: str, prompts: list[str]) -> dict:
    """Phase 6: the hidden voters on the new adapter against the base, on the run's held-back prompts."""
    lock = threading.Lock()
    votes, pairs, errors = [], [], []
    per_student = -(-args.judge_pairs // args.students)

    def student(i: int):
        try:
            person = students[i] or Student(app, i, args.seed)  # the same person, joined with its token
            for k in range(per_student):
                prompt = prompts[(i * per_student + k) % len(prompts)]
                pair = person.call(adapter=adapter, text=prompt, opponent="base", alpha=1.0, api_name="/vote_pair_try")
                choice = noisy_vote(pair["A"], pair["B"], person.rng)
                reveal = person.call(pair=pair["pair"], choice=choice, reason="", api_name="/vote")
                tailored = "A" if reveal["A"]["side"] == f"adapter {adapter}" else "B"
                with lock:
                    votes.append((choice, tailored, taste(pair["A"], pair["B"])))
                    pairs.append((pair["A"], pair["B"], tailored))
        except Exception as err:  # noqa: BLE001
            with lock:
                errors.append(f"judge {i + 1}: {type(err).__name__}: {err}"[:300])

    started = time.perf_counter()
    every_student(student, args.students)
    return {"seconds": time.perf_counter() - started, "votes": votes, "pairs": pairs, "errors": errors}


def rate(wins: int, losses: int) -> dict:
    from ipa.tasks.metrics import win_rate

    r, low, high = win_rate(wins, losses)
    return {"rate": r and round(r, 3), "low": low and round(low, 3), "high": high and round(high, 3), "n": wins + losses}


def accuracy(model_dir: Path, pairs: list[tuple]) -> dict:
    """The learned reward against the hidden taste (no flips) on pairs it was not fitted on; the taste's ties left out."""
    from ipa.rewards.preference import PreferenceReward

    reward = PreferenceReward(MODEL, folder=model_dir)
    decided = [(a, b, taste(a, b)) for a, b, *_ in pairs if taste(a, b) != "same"]
    if not decided:
        return rate(0, 0)
    scores = reward([""] * (2 * len(decided)), [t for a, b, _ in decided for t in (a, b)])
    right = sum((scores[2 * i] > scores[2 * i + 1]) == (said == "A") for i, (_, _, said) in enumerate(decided))
    return rate(right, len(decided) - right)


def run(args) -> dict:
    from gradio_client import Client

    from ipa.models import machine_name, resolve_device
    from ipa.tasks.objective import load_objective, objective_inputs
    from ipa.preferences.store import SQLiteVoteStore

    folder = Path(args.workdir or tempfile.mkdtemp(prefix="bench-classroom-"))
    secret = secrets.token_urlsafe(16)
    flags = ["--runs-dir", str(folder / "runs"), "--class-dir", str(folder / "classroom"), "--class-code", CODE,
             "--min-votes", str(args.min_votes), *shlex.split(args.app_args)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "IPA_TEACHER_SECRET": secret}
    log_path = str(folder / "app.log")
    app = App(flags, env, log_path)
    result = {"command": shlex.join(["python", "-m", "bench.classroom", *args.argv]), "date": time.strftime("%Y-%m-%d"),
              "machine": machine_name(resolve_device("cpu")), "students": args.students,
              "votes_per_student": args.votes_per_student, "train_minutes": args.train_minutes, "seconds": {}}
    load = os.getloadavg()[0]
    try:
        result["seconds"]["start"] = round(app.start(), 1)
        say(f"app up in {result['seconds']['start']} s (log {log_path}); load average {load:.1f}")

        started = time.perf_counter()
        alone = Client(app.url, verbose=False)
        generate_request(alone, 0)
        times = []
        for seed in range(3):
            t = time.perf_counter()
            generate_request(alone, seed)
            times.append(time.perf_counter() - t)
        result["alone_s"] = round(statistics.median(times), 3)
        result["seconds"]["alone"] = round(time.perf_counter() - started, 1)
        say(f"one Generate alone: {result['alone_s']} s")

        students = [None] * args.students
        voting = class_phase(app, args, students)
        result["seconds"]["class"] = round(voting["seconds"], 1)
        result["votes_sent"] = len(voting["sent"])
        result["killed_after_votes"], result["seconds"]["restart"] = voting["at"], voting["restart_s"]
        store = SQLiteVoteStore(folder / "classroom" / "votes.sqlite")
        try:
            stored = {v.pair_id for v, _ in store.votes(store.current_class().id)}
        finally:
            store.close()
        result["votes_stored"] = len(stored)
        result["acknowledged_votes_missing"] = len(set(voting["sent"]) - stored)
        p95 = percentile(voting["generate"], 0.95)
        result["generate_during_class"] = len(voting["generate"])
        result["p95_generate_s"] = p95 and round(p95, 2)
        result["p95_over_alone"] = p95 and round(p95 / result["alone_s"], 2)
        result["win_rate_before"] = rate(voting["wins"], voting["losses"])
        result["class_errors"] = voting["errors"][:5]
        say(f"class: {result['votes_sent']} votes sent, {result['votes_stored']} stored in {result['seconds']['class']} s; "
            f"p95 {result['p95_over_alone']} x alone")

        teacher = Client(app.url, verbose=False)
        teacher.predict(secret=secret, api_name="/class_teacher")
        teacher.predict(code=CODE, name="The teacher", token="", api_name="/class_join")
        started = time.perf_counter()
        learned = teacher.predict(name=MODEL, api_name="/class_learn")
        result["seconds"]["learn"] = round(time.perf_counter() - started, 1)
        result["learned"] = learned
        result["preference_accuracy_detail"] = accuracy(folder / "classroom" / "preferences", voting["held_out"])
        result["preference_accuracy"] = result["preference_accuracy_detail"]["rate"]
        say(f"learned in {result['seconds']['learn']} s: held-out agreement with the votes {learned['agreement']:.3f}; "
            f"with the hidden taste {result['preference_accuracy']}")

        started = time.perf_counter()
        snapshot = teacher.predict(model=MODEL, honest=args.honest, minutes=args.train_minutes, lr=args.lr,
                                   batch_size=args.batch_size, group_size=args.group_size, max_new_tokens=0,
                                   eval_prompts=args.eval_prompts, api_name="/class_train")
        adapter = snapshot["adapter"]
        while True:
            status = teacher.predict(api_name="/train_status")
            if status["state"] in ("done", "failed", "cancelled"):
                break
            time.sleep(5)
        result["seconds"]["train"] = round(time.perf_counter() - started, 1)
        result["train"] = {"adapter": adapter, "state": status["state"], "error": status["error"], "steps": status["step"],
                           "training_s": round(status["elapsed"], 1), "reward_before": status["reward_before"],
                           "reward_after": status["reward_after"], "prompts": snapshot["prompts"]}
        say(f"trained {adapter}: {status['step']} steps in {status['elapsed']:.0f} s of training; held-back reward "
            f"{status['reward_before']} -> {status['reward_after']}")
        if status["state"] != "done":
            raise RuntimeError(f"the run ended {status['state']}: {status['error']}")

        objective = load_objective(folder / "runs" / adapter / "objective.json")
        prompts = [row["text"] for row in objective_inputs(objective, split="eval")]
        result["held_back_prompts"] = len(prompts)
        judged = judge_phase(app, args, students, adapter, prompts)
        result["seconds"]["judge"] = round(judged["seconds"], 1)
        wins = sum(1 for choice, tailored, _ in judged["votes"] if choice == tailored)
        losses = sum(1 for choice, tailored, _ in judged["votes"] if choice not in ("same", tailored))
        result["win_rate_after"] = rate(wins, losses)
        clean_wins = sum(1 for _, tailored, said in judged["votes"] if said == tailored)
        clean_losses = sum(1 for _, tailored, said in judged["votes"] if said not in ("same", tailored))
        result["win_rate_after_without_flips"] = rate(clean_wins, clean_losses)
        result["preference_accuracy_on_new_pairs"] = accuracy(folder / "classroom" / "preferences", judged["pairs"])["rate"]
        if judged["pairs"]:  # the share of texts with a food word, each column
            result["food_rate"] = {
                "base": round(statistics.fmean(food_words(b if t == "A" else a) > 0 for a, b, t in judged["pairs"]), 3),
                "tailored": round(statistics.fmean(food_words(a if t == "A" else b) > 0 for a, b, t in judged["pairs"]), 3)}
        result["judge_errors"] = judged["errors"][:5]
        say(f"judged: {result['win_rate_after']}")
    finally:
        app.stop()
    result["load_average"] = {"start": round(load, 1), "end": round(os.getloadavg()[0], 1)}
    result["targets"] = verdicts(result)
    return result


def verdicts(result: dict) -> dict:
    mark = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    after = (result.get("win_rate_after") or {}).get("rate")
    return {"no vote lost": mark(result.get("votes_stored") == result.get("votes_sent") and not result.get("acknowledged_votes_missing")),
            "preference_accuracy >= 0.85": mark((result.get("preference_accuracy") or 0) >= 0.85),
            "win_rate_after >= 0.65": mark((after or 0) >= 0.65),
            "p95_over_alone <= 3": mark((result.get("p95_over_alone") or 99) <= 3)}


def table(result: dict) -> str:
    s = result["seconds"]
    train = result.get("train", {})
    lines = [f"Machine: {result['machine']}; {result['date']}; load average {result['load_average']['start']} at the start, "
             f"{result['load_average']['end']} at the end (the machine is shared).", "",
             "| figure | value | target |", "| --- | ---: | --- |",
             f"| votes sent / stored (app killed with SIGKILL after {result.get('killed_after_votes')} acknowledged votes) | "
             f"{result.get('votes_sent')} / {result.get('votes_stored')} | equal: {result['targets']['no vote lost']} |",
             f"| preference_accuracy (held-out pairs, the hidden taste without flips) | {result.get('preference_accuracy')} "
             f"(n = {result.get('preference_accuracy_detail', {}).get('n')}) | >= 0.85: {result['targets']['preference_accuracy >= 0.85']} |",
             f"| held-out agreement with the votes (5 folds, flips included) | {result.get('learned', {}).get('agreement')} | |",
             f"| win_rate_before (shipped sentiment adapter vs base, the class's votes) | {result.get('win_rate_before')} | |",
             f"| win_rate_after (the class's adapter vs base, held-back prompts) | {result.get('win_rate_after')} | >= 0.65: "
             f"{result['targets']['win_rate_after >= 0.65']} |",
             f"| p95 of Generate while the class votes / one alone ({result.get('alone_s')} s) | {result.get('p95_over_alone')} "
             f"(n = {result.get('generate_during_class')}) | <= 3: {result['targets']['p95_over_alone <= 3']} |",
             f"| training: steps in {train.get('training_s')} s, held-back objective reward | {train.get('steps')}, "
             f"{train.get('reward_before')} -> {train.get('reward_after')} | |",
             "", "Seconds per phase: " + ", ".join(f"{k} {v}" for k, v in s.items()) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--votes-per-student", type=int, default=20)
    parser.add_argument("--held-out-per-student", type=int, default=3, help="pairs each student is shown and never votes on")
    parser.add_argument("--train-minutes", type=float, default=3.0)
    parser.add_argument("--judge-pairs", type=int, default=120, help="pairs of the new adapter against the base, in all")
    parser.add_argument("--honest", nargs="*", default=["fluency"], help="blocks beside the preference (fluency, relevance)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--eval-prompts", type=int, default=8)
    parser.add_argument("--min-votes", type=int, default=30)
    parser.add_argument("--no-kill", action="store_true", help="do not kill the app mid-class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--app-args", default="", help='more flags for app.py, one string (e.g. "--device cuda")')
    parser.add_argument("--workdir", default="", help="where the app's runs and class folder go (default: a new temp folder)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--out", default="", help="also write the section of this file (BENCHMARKS.md)")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    try:
        result = run(args)
    except StartupError as err:
        sys.exit(f"error: {err}")
    if args.json:
        print(json.dumps(result))
    else:
        print(table(result))
    if args.out:
        write_section(Path(args.out), HEADING, f"Command: `{result['command']}`\n\n" + table(result))


if __name__ == "__main__":
    main()
