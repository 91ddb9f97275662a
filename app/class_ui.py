"""Class mode in the page: the blind vote panel under each tab's result and in "Try your adapters", the Class tab (who
you are, what the class thinks against what the reward thinks, learning the class's preference and training on it,
the teacher's view), and the API endpoints gradio_client calls for the same actions. Wiring only: every rule is
app/classroom.py's, every view app/views.py's.

API (gradio_client): class_join(code, name, token), vote_pair(task, inputs, adapter, alpha), vote_pair_try(adapter,
text, opponent, alpha), vote(pair, choice, reason), class_stats(), class_teacher(secret), class_learn(name),
class_train(model, honest, minutes, ...), class_students(), class_votes(), class_runs(), class_export (a file),
class_new(name). A client's session is its own (gradio_client's session hash): it joins once, then votes as that person.
"""

from __future__ import annotations

import inspect
import secrets
import tempfile
from pathlib import Path
from typing import Callable, Optional

import gradio as gr

from app import share_ui, views
from app.classroom import HONEST_BLOCKS, REASON_CHARS, Classroom, ClassError
from app.service import USER_ERRORS, Playground
from app.widgets import NO_ADAPTER, bound, local_browser, user_error
from ipa.tasks import InputField, Task

BROWSER_KEY = "ipa-class"
"""Where the browser keeps the person (localStorage): {"token", "code", "name"}."""
CHOICE_BUTTONS = (("A is better", "A"), ("About the same", "same"), ("B is better", "B"))


def _session(request: gr.Request | None) -> str | None:
    return request.session_hash if request is not None else None


def _person(classroom: Classroom, request: gr.Request | None, profile) -> str | None:
    """The request's session, joined first when the page's Hugging Face sign-in says who it is (sign-in 'hf')."""
    session = _session(request)
    if classroom.sign_in == "hf" and profile is not None and session:
        classroom.join(session, hf_user=profile.username)
    return session


def _with_session(fn: Callable, names: list[str]) -> Callable:
    """A handler taking *values: named parameters for the widgets, then the request and the Hugging Face profile,
    which Gradio fills in (it reads their annotations)."""
    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
        + [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request),
           inspect.Parameter("profile", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Optional[gr.OAuthProfile])])
    fn.__annotations__ = {"request": gr.Request, "profile": Optional[gr.OAuthProfile]}
    return fn


def _checked(call: Callable):
    try:
        return call()
    except USER_ERRORS as err:
        raise user_error(err) from None


# --- the vote panel ------------------------------------------------------------------------------------------------


def shown_pair(classroom: Classroom, make_pair: Callable[..., dict], missing: Callable[..., str | None] | None,
               *values):
    """Show two texts: the pair make_pair makes of the inputs' values (the last two values: the request and the
    Hugging Face profile), once missing(*values) finds nothing to fill in first."""
    *values, request, profile = values
    problem = missing(*values) if missing else None
    if problem:
        raise user_error(ClassError(problem))
    made = _checked(lambda: make_pair(_person(classroom, request, profile), *values))
    return made["A"], made["B"], "", "Read both, then vote: which continues the input better?", made["pair"]


def voted(classroom: Classroom, choice: str, pair_id, why, request, profile):
    """A vote button: `choice` (A, B or same) on the pair shown, with its reason; then both texts revealed."""
    if not pair_id:
        raise user_error(ClassError("Press “Show two texts” first, then vote on them."))
    reveal = _checked(lambda: classroom.vote(_person(classroom, request, profile), pair_id, choice, why))
    return views.reveal_markdown(reveal), "", ""


def task_pair(classroom: Classroom, task: Task, session, *values) -> dict:
    """A task tab's pair: its input (the fields' values), the base against the tab's adapter at its alpha."""
    *texts, name, strength = values
    if name in (None, "", NO_ADAPTER):
        raise ClassError("Choose an adapter above: a blind vote puts it against the base.")
    return classroom.show_pair(session, task.name, dict(zip([f.name for f in task.fields], texts)), name, None,
                               alpha=strength)


def task_missing(task: Task, *values) -> str | None:
    empty = [f.label.lower() for f, v in zip(task.fields, values) if InputField.missing(v)]
    return f"The {empty[0]} is missing: type it above first." if empty else None


def try_pair(classroom: Classroom, service: Playground, session, name, typed, strength, other) -> dict:
    """The pair of "Try your adapters": the chosen adapter against the base or another adapter, on the typed text."""
    task, inputs, adapter = service.try_inputs(name, typed, "vote in that task's tab.")
    return classroom.show_pair(session, task, inputs, adapter, None if other in (None, "", "base") else other,
                               alpha=strength)


def try_missing(name, typed, *rest) -> str | None:
    return "Pick an adapter first." if name in (None, "") else "Type a text first." if InputField.missing(typed) else None


def vote_panel(classroom: Classroom, prefix: str, about: str, make_pair: Callable[..., dict], inputs: list,
               missing: Callable[..., str | None] | None = None) -> None:
    """"Which is better?": two texts of one input in random order, unlabelled; A, B or about the same with a reason;
    then both revealed with their rewards. make_pair(session, *values of inputs) -> {pair, A, B} (the classroom's
    show_pair); missing(*values): what the student must fill in first, or None."""
    with gr.Accordion("Which is better? Vote blind", open=False, elem_id=f"{prefix}-vote"):
        gr.Markdown(about)
        show = gr.Button("Show two texts", elem_id=f"{prefix}-vote-show")
        with gr.Row(equal_height=False, elem_classes="ipa-columns"):
            text_a = gr.Textbox(label="A", lines=4, interactive=False, elem_id=f"{prefix}-vote-text-a")
            text_b = gr.Textbox(label="B", lines=4, interactive=False, elem_id=f"{prefix}-vote-text-b")
        reason = gr.Textbox(label=f"Why? (optional, up to {REASON_CHARS} characters)", max_lines=2, max_length=REASON_CHARS,
                            elem_id=f"{prefix}-vote-reason")
        with gr.Row():
            buttons = [gr.Button(label, elem_id=f"{prefix}-vote-choose-{choice.lower()}") for label, choice in CHOICE_BUTTONS]
        result = gr.Markdown(elem_id=f"{prefix}-vote-result")
        pair = gr.State("")

    on_show = _with_session(bound(shown_pair, classroom, make_pair, missing), [f"value_{i}" for i in range(len(inputs))])
    show.click(on_show, inputs, [text_a, text_b, reason, result, pair], api_visibility="private",
               concurrency_id="generate", show_progress="minimal")

    for button, (_, choice) in zip(buttons, CHOICE_BUTTONS):
        button.click(_with_session(bound(voted, classroom, choice), ["pair_id", "why"]), [pair, reason],
                     [result, pair, reason], api_visibility="private", concurrency_limit=None)


def task_vote_panel(classroom: Classroom, task: Task, fields: list, adapter, alpha) -> None:
    """The panel under a task tab's result: the tab's input, the base against the tab's adapter at its alpha."""
    vote_panel(classroom, task.name, "Two continuations of the input above, one by the base and one by base + the "
               "adapter, in random order and unlabelled. Pick the better one; both are revealed, with their rewards, once "
               "your vote is saved.", bound(task_pair, classroom, task), [*fields, adapter, alpha],
               bound(task_missing, task))


def try_vote_panel(classroom: Classroom, service: Playground, chosen, text, alpha, opponent) -> None:
    """The panel of "Try your adapters": the chosen adapter against the base or another adapter ("vote on the new adapter
    against the old one")."""
    vote_panel(classroom, "try", "The adapter chosen above against the one chosen here (the base, or another adapter: "
               "the old one against the new), one continuation each of your text, in random order and unlabelled.",
               bound(try_pair, classroom, service), [chosen, text, alpha, opponent], try_missing)


def opponent_choices(service: Playground) -> list[tuple[str, str]]:
    return [("The base model", "base")] + [(f"{e.name} ({e.source})", e.name) for e in list(service.adapters.values())]


# --- the Class tab ---------------------------------------------------------------------------------------------------


INTRO = """**Class mode.** Everyone votes blind on pairs of texts (*Which is better?* under each tab's result, and in *Try
your adapters*): the votes are stored for good, the class's verdict is set beside the reward's, a **class preference**
reward is learned from the votes, and an adapter trained on it goes back to the class for a new vote."""


# --- the Class tab's handlers: module level, the classroom given by widgets.bound --------------------------------


def said(joined: dict) -> str:
    """The line under the sign-in: who this session votes as, in which class."""
    return views.markdown("You vote as **{student}** in *{lesson}*.", student=joined["student"], lesson=joined["class"])


def resume(classroom: Classroom, stored, request: gr.Request, profile: Optional[gr.OAuthProfile]):
    """On page load: the person this browser keeps joins again (with its token), or is told how to join."""
    stored = dict(stored) if isinstance(stored, dict) else {}
    session, mode = _session(request), classroom.sign_in
    try:
        if mode == "hf":
            if profile is None:
                return "Sign in with Hugging Face (the button above) to vote.", stored
            return said(classroom.join(session, hf_user=profile.username)), stored
        if mode == "code" and not (stored.get("code") and stored.get("name")):
            return "Type the class code and your name, then *Join the class*.", stored
        joined = classroom.join(session, stored.get("code", ""), stored.get("name", ""), stored.get("token", ""))
    except USER_ERRORS as err:
        return views.markdown("Join the class again: {why}", why=str(err)), stored
    return said(joined), {**stored, "token": joined["token"]}


def joined_now(classroom: Classroom, code_: str, name_: str, stored, request: gr.Request):
    stored = dict(stored) if isinstance(stored, dict) else {}
    same = stored.get("name", "").casefold() == " ".join(str(name_).split()).casefold()
    joined = _checked(lambda: classroom.join(_session(request), code_, name_, stored.get("token", "") if same else ""))
    return said(joined), {"code": code_, "name": joined["student"], "token": joined["token"]}


def public_view(classroom: Classroom):
    stats = classroom.stats()
    names = [m["name"] for m in stats["models"]]
    return (views.agreement_markdown(stats["agreement"]), views.leaderboard_markdown(stats["leaderboard"]),
            views.models_markdown(stats["models"]), gr.update(choices=names, value=names[-1] if names else None))


def learn_now(classroom: Classroom, name_: str, request: gr.Request):
    summary = _checked(lambda: classroom.learn(_session(request), name_ or "", local=local_browser(request)))
    return views.learned_markdown(summary), *public_view(classroom)


def train_now(classroom: Classroom, model_: str, honest_: list, minutes_: float, request: gr.Request,
              profile: Optional[gr.OAuthProfile]):
    session = _person(classroom, request, profile)
    snapshot = _checked(lambda: classroom.train(session, model_ or "", honest_ or [], float(minutes_ or 0),
                                                local=local_browser(request)))
    return views.markdown("Queued **{adapter}** ({state}), trained on {prompts}: follow it in the *Train an adapter* "
                          "tab; then vote on it in *Try your adapters*.", adapter=snapshot["adapter"],
                          state=snapshot["state"], prompts=snapshot["prompts"])


def teacher_view(classroom: Classroom, request: gr.Request):
    session, local = _session(request), local_browser(request)
    if not classroom.is_teacher(session, local):
        return [gr.skip()] * 3
    return (views.students_markdown(classroom.students(session, local)),
            views.recent_votes_markdown(classroom.recent_votes(session, local)),
            views.runs_markdown(classroom.runs(session, local)))


def teacher_now(classroom: Classroom, secret_: str, request: gr.Request):
    _checked(lambda: classroom.teacher_sign_in(_session(request), secret_))
    return "You are the teacher in this browser tab.", "", *teacher_view(classroom, request)


def teacher_refreshed(classroom: Classroom, request: gr.Request):
    _checked(lambda: classroom.require_teacher(_session(request), local_browser(request)))
    return teacher_view(classroom, request)


def export_now(classroom: Classroom, request: gr.Request) -> str:
    """The current class's votes as a JSONL file, one vote a line with its pair (teacher only)."""
    folder = Path(tempfile.mkdtemp(prefix="ipa-votes-"))
    return str(_checked(lambda: classroom.export(_session(request), folder, local_browser(request))))


def push_now(classroom: Classroom, repo_: str, request: gr.Request) -> str:
    url = _checked(lambda: classroom.push_to_hub(_session(request), repo_, local_browser(request)))
    return views.markdown("Pushed: {url}", url=url)


def new_now(classroom: Classroom, name_: str, request: gr.Request):
    started = _checked(lambda: classroom.new_class(_session(request), name_, local_browser(request)))
    return (views.markdown("Archived *{old}*; *{new}* has started: everyone votes there now.", old=started["archived"],
                           new=started["class"]), *public_view(classroom))


def class_tab(classroom: Classroom, service: Playground, demo: gr.Blocks, browser: gr.BrowserState) -> None:
    """Who you are, what the class thinks, the class preference (learn it, train on it), and the teacher's view."""
    gr.Markdown(INTRO)
    mode = classroom.sign_in
    with gr.Row():
        if mode == "hf":
            gr.LoginButton()
        elif mode == "code":
            code = gr.Textbox(label="Class code", type="password", max_lines=1, elem_id="class-code")
            name = gr.Textbox(label="Your name", max_lines=1, max_length=40, elem_id="class-name")
            join = gr.Button("Join the class", variant="primary", elem_id="class-join")
    who = gr.Markdown(elem_id="class-who")

    demo.load(bound(resume, classroom), browser, [who, browser], api_visibility="private", queue=False)
    if mode == "code":
        join.click(bound(joined_now, classroom), [code, name, browser], [who, browser], api_visibility="private",
                   concurrency_limit=None)

    with gr.Accordion("What the class thinks, and what the reward thinks", open=True, elem_id="class-stats"):
        refresh = gr.Button("Refresh", size="sm", elem_id="class-refresh")
        agreement = gr.Markdown(elem_id="class-agreement")
        gr.Markdown("**Leaderboard: the adapters by the class's win rate against the base**")
        leaderboard = gr.Markdown(elem_id="class-leaderboard")

    with gr.Accordion("Votes become a reward: the class preference", open=True, elem_id="class-preference"):
        gr.Markdown(f"A Bradley-Terry model on sentence embeddings is fitted to the class's votes (seconds): it scores "
                    f"a text by how likely the class is to prefer it. It needs {classroom.config.min_votes} decisive votes "
                    "(A or B), and says how often it agrees with votes it was not fitted on before anyone trains on it "
                    "(the teacher learns it). It is a reward block like any other (*preference*, in the Train tab's "
                    "objective too): train an adapter on it, alone or kept honest by fluency and relevance, then vote on "
                    "the new adapter against the base (or the old one) in *Try your adapters*.")
        models = gr.Markdown(elem_id="class-models")
        with gr.Row():
            model_name = gr.Textbox(label="Name of the new model (empty: class-N-K)", max_lines=1, elem_id="class-model-name")
            learn = gr.Button("Learn from the votes", variant="primary", elem_id="class-learn")
        learned = gr.Markdown(elem_id="class-learned")
        with gr.Row():
            model = gr.Dropdown([], label="Train on the model", allow_custom_value=True, elem_id="class-train-model")
            honest = gr.CheckboxGroup(list(HONEST_BLOCKS), value=["fluency"], label="Keep it honest with",
                                      elem_id="class-train-honest")
            minutes = gr.Number(3, minimum=0.05, label="Minutes", elem_id="class-train-minutes")
            train = gr.Button("Train an adapter on it", elem_id="class-train")
        trained = gr.Markdown(elem_id="class-trained")

    public = [agreement, leaderboard, models, model]
    on_public = bound(public_view, classroom)
    refresh.click(on_public, None, public, api_visibility="private", concurrency_limit=None)
    demo.load(on_public, None, public, api_visibility="private", queue=False)

    learn.click(bound(learn_now, classroom), model_name, [learned, *public], api_visibility="private",
                concurrency_limit=1)
    train.click(bound(train_now, classroom), [model, honest, minutes], trained, api_visibility="private",
                concurrency_limit=None)

    with gr.Accordion("Teacher", open=False, elem_id="class-teacher"):
        with gr.Row():
            secret = gr.Textbox(label="The teacher's secret", type="password", max_lines=1, elem_id="class-secret")
            teacher = gr.Button("Sign in as the teacher", elem_id="class-teacher-sign-in")
        teacher_said = gr.Markdown(elem_id="class-teacher-said")
        teacher_refresh = gr.Button("Refresh the teacher's view", size="sm", elem_id="class-teacher-refresh")
        gr.Markdown("**Students**")
        students = gr.Markdown(elem_id="class-students")
        gr.Markdown("**Latest votes and their reasons**")
        recent = gr.Markdown(elem_id="class-recent")
        gr.Markdown("**The class's runs and adapters**")
        runs = gr.Markdown(elem_id="class-runs")
        with gr.Row():
            export = gr.Button("Download the votes (JSONL)", elem_id="class-export")
            exported = gr.File(label="The votes", interactive=False, elem_id="class-exported")
        with gr.Row():
            repo = gr.Textbox(label="… or push them to a Hugging Face dataset (OWNER/NAME; needs the network and $HF_TOKEN)",
                              max_lines=1, elem_id="class-repo")
            push = gr.Button("Push", elem_id="class-push")
        with gr.Row():
            new_name = gr.Textbox(label="Start a new class (the old one's votes are archived, never deleted)", max_lines=1,
                                  elem_id="class-new-name")
            new = gr.Button("Start a new class", variant="stop", elem_id="class-new")
        done = gr.Markdown(elem_id="class-teacher-done")

    teacher.click(bound(teacher_now, classroom), secret, [teacher_said, secret, students, recent, runs],
                  api_visibility="private", concurrency_limit=None)
    teacher_refresh.click(bound(teacher_refreshed, classroom), None, [students, recent, runs], api_visibility="private",
                          concurrency_limit=None)

    on_export = share_ui.document(bound(export_now, classroom), {}, returns="The votes as a JSONL file.")
    export.click(on_export, None, exported, api_name="class_export", concurrency_limit=None)

    push.click(bound(push_now, classroom), repo, done, api_visibility="private", concurrency_limit=None)
    new.click(bound(new_now, classroom), new_name, [done, *public], api_visibility="private", concurrency_limit=None)


# --- the API: the same actions for gradio_client -------------------------------------------------------------------


def class_join(classroom: Classroom, code: str = "", name: str = "", token: str = "", request: gr.Request = None,
               profile: Optional[gr.OAuthProfile] = None) -> dict:
    """Join the class as a person: the class code and a display name (sign-in 'code'; the token the first join
    answered proves the name is yours), nothing but the token (anonymous), or the Hugging Face sign-in ('hf')."""
    return _checked(lambda: classroom.join(_session(request), code, name, token,
                                           hf_user=profile.username if profile is not None else None))

def vote_pair(classroom: Classroom, task: str, inputs: dict, adapter: str, alpha: float = 1.0,
              request: gr.Request = None, profile: Optional[gr.OAuthProfile] = None) -> dict:
    """Two continuations of the inputs, the base's and the adapter's, in random order: {pair, A, B}."""
    return _checked(lambda: classroom.show_pair(_person(classroom, request, profile), task, inputs, adapter, None,
                                                alpha=alpha))

def vote_pair_try(classroom: Classroom, service: Playground, adapter: str, text: str, opponent: str = "base",
                  alpha: float = 1.0, request: gr.Request = None, profile: Optional[gr.OAuthProfile] = None) -> dict:
    """Two continuations of the text, the adapter's and the opponent's (the base, or another adapter at its card's
    strength), in random order: {pair, A, B}."""
    def make():
        task, inputs, name = service.try_inputs(adapter, text, "vote in that task's tab.")
        return classroom.show_pair(_person(classroom, request, profile), task, inputs, name,
                                   None if opponent in (None, "", "base") else opponent, alpha=alpha)
    return _checked(make)

def vote(classroom: Classroom, pair: str, choice: str, reason: str = "", request: gr.Request = None,
         profile: Optional[gr.OAuthProfile] = None) -> dict:
    """Vote on a pair shown to you: A, B or same; then which text was which, with their rewards."""
    return _checked(lambda: classroom.vote(_person(classroom, request, profile), pair, choice, reason))

def class_stats(classroom: Classroom) -> dict:
    """What the class thinks against what the reward thinks, the leaderboard, the preference models."""
    return classroom.stats()

def class_teacher(classroom: Classroom, secret: str, request: gr.Request = None) -> str:
    """Become the teacher in this session with the secret the playground was started with."""
    _checked(lambda: classroom.teacher_sign_in(_session(request), secret))
    return "You are the teacher in this session."

def class_learn(classroom: Classroom, name: str = "", request: gr.Request = None) -> dict:
    """Learn a preference model from the current class's votes (teacher): its held-out agreement with the votes."""
    return _checked(lambda: classroom.learn(_session(request), name, local=local_browser(request)))

def class_train(classroom: Classroom, model: str, honest: list[str], minutes: float = 3.0, lr: float = 1e-3,
                batch_size: int = 8, group_size: int = 4, max_new_tokens: int = 0, eval_prompts: int = 8,
                request: gr.Request = None, profile: Optional[gr.OAuthProfile] = None) -> dict:
    """Queue a run for the class preference `model` (+ the honest blocks) on the inputs the class voted on."""
    session = _person(classroom, request, profile)
    return _checked(lambda: classroom.train(session, model, honest, minutes, local=local_browser(request), lr=lr,
                                            batch_size=int(batch_size), group_size=int(group_size),
                                            max_new_tokens=int(max_new_tokens), eval_prompts=int(eval_prompts)))

def class_students(classroom: Classroom, request: gr.Request = None) -> list:
    """Each student of the current class with pairs shown and votes cast (teacher)."""
    return _checked(lambda: classroom.students(_session(request), local_browser(request)))

def class_votes(classroom: Classroom, request: gr.Request = None) -> list:
    """The current class's latest votes with their reasons (teacher)."""
    return _checked(lambda: classroom.recent_votes(_session(request), local_browser(request)))

def class_runs(classroom: Classroom, request: gr.Request = None) -> list:
    """The class's runs and adapters with their owners (teacher)."""
    return _checked(lambda: classroom.runs(_session(request), local_browser(request)))

def class_new(classroom: Classroom, name: str, request: gr.Request = None) -> dict:
    """Archive the current class's votes and start a new class (teacher)."""
    return _checked(lambda: classroom.new_class(_session(request), name, local_browser(request)))


def class_api(classroom: Classroom, service: Playground) -> None:
    """The class-mode endpoints (see the module's docstring); each a gr.api, answering JSON."""

    # the training parameters' lines are the Training tab's (TrainRequest's field docstrings), alpha's Generate's
    training = share_ui.training_docs(0)
    docs = {**{name: training[name] for name in ("lr", "batch_size", "group_size", "max_new_tokens", "eval_prompts")},
            "alpha": share_ui.generation_docs()["alpha"], "code": "The class code (sign-in 'code'; empty otherwise).", "name": "Your display name (sign-in 'code').",
            "token": "The token your first join answered (empty the first time).",
            "task": "One of the tasks (the tab).", "inputs": 'The task\'s inputs, e.g. {"text": "On Saturday we"}.',
            "adapter": "The adapter to compare (its name).",
            "text": "Your text: to continue, or your message.", "opponent": '"base", or another adapter\'s name.',
            "pair": "The pair's id, as vote_pair answered it.", "choice": "A, B or same.",
            "reason": f"Why (optional; at most {REASON_CHARS} characters).", "secret": "The teacher's secret.",
            "model": "A preference model's name (class_stats lists them).",
            "honest": f"Blocks that keep it honest: any of {', '.join(HONEST_BLOCKS)}.", "minutes": "Training minutes."}
    endpoints = [bound(class_join, classroom), bound(vote_pair, classroom), bound(vote_pair_try, classroom, service),
                 bound(vote, classroom), bound(class_stats, classroom), bound(class_teacher, classroom),
                 bound(class_learn, classroom), bound(class_train, classroom), bound(class_students, classroom),
                 bound(class_votes, classroom), bound(class_runs, classroom), bound(class_new, classroom)]
    for fn in endpoints:
        share_ui.document(fn, docs)
        heavy = fn.__name__ in ("vote_pair", "vote_pair_try")
        gr.api(fn, api_name=fn.__name__, concurrency_id="generate" if heavy else None,
               concurrency_limit="default" if heavy else (1 if fn.__name__ == "class_learn" else None))


def browser_state(classroom: Classroom) -> gr.BrowserState:
    """The person this browser keeps between visits (sign-in 'code' and 'anonymous'): its token, and the class code and
    name it joined with. The key is fixed and the secret the class folder's, so a restarted playground reads it."""
    key_file = classroom.folder / "browser.key"
    if not key_file.is_file():
        key_file.write_text(secrets.token_urlsafe(24))
    return gr.BrowserState({"token": "", "code": "", "name": ""}, storage_key=BROWSER_KEY,
                           secret=key_file.read_text().strip())
