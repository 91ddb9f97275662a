"""What a task is: the Task and InputField classes, its rates (Rate), and the helpers task modules share.

Each task is one module beside this one (ipa/tasks/toxicity.py, commongen.py, ...) that declares `TASK = Task(...)`:
its inputs, prompt, decoding defaults, demos, reward as blocks of an objective, rates and default data. ipa.tasks
registers them in TASKS. This module imports no task and loads no model.
"""

from __future__ import annotations

import re
import statistics
import textwrap
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ipa.errors import UserError
from ipa.rewards.objective import PRODUCT, Block, Objective
from ipa.rewards.text import parse_concepts

PROMPT_FORMATS = ("raw", "chat")
TOXICITY_BLOCKS = ("toxicity", "toxicity_level", "safety")
"""The blocks that run the toxicity classifier."""
MIN_CONCEPTS, MAX_CONCEPTS = 3, 5


def _valid_unicode(text: str) -> bool:
    """False for text with lone surrogates, which an API client can send but no tokenizer reads."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class TaskInputError(UserError):
    """A task's input is missing or malformed; the message says which field and what to give."""


@dataclass(frozen=True)
class InputField:
    """One box the user fills in for a task."""

    name: str
    """The key in the inputs dict ('text', 'concepts', 'message', 'knowledge')."""
    label: str
    """What the UI shows above the box."""
    kind: str = "text"
    """'text' (free text) or 'concepts' (a list of words, typed as one string or given as a list)."""
    placeholder: str = ""
    """A grey example shown in the empty box."""
    lines: int = 1
    """How many lines the box shows."""

    @staticmethod
    def missing(value) -> bool:
        """Whether a value leaves the box empty (nothing, or only spaces): the one rule, for the service and the page."""
        return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, (list, tuple)) and not value)


@dataclass(frozen=True)
class Rate:
    """A task's rate: the share of samples that pass `test(inputs, text, scores)`."""

    name: str
    """The key in the metrics dict."""
    definition: str
    """The test in words, for reports."""
    test: Callable[[dict, str, dict], bool]
    """(the sample's task inputs, its text, its scores) -> passes?"""
    replaces: str = ""
    """A 0/1 score part this rate reports under its own name (dialogue_safety's `refusal`), left out of the parts."""
    applies: Callable[[dict], bool] | None = None
    """Which samples the share is over, by their task inputs (a request category); None: all of them."""

    def __call__(self, inputs: Sequence[dict], texts: Sequence[str], scores: Sequence[dict]) -> float | None:
        """The share; None when no sample is one the rate applies to (missing, not 0)."""
        passed = [1.0 if self.test(x, t, s) else 0.0 for x, t, s in zip(inputs, texts, scores)
                  if self.applies is None or self.applies(x)]
        return statistics.fmean(passed) if passed else None


@dataclass(frozen=True)
class Task:
    """A task: inputs, prompt, decoding defaults, demo inputs, reward description and default data."""

    name: str
    """Key in TASKS and in adapter cards."""
    title: str
    """Human-readable name."""
    description: str
    """One line for the UI: what the adapter is trained to do."""
    fields: tuple[InputField, ...]
    """The inputs a user gives, in order."""
    prompt_format: str
    """'raw' (the text itself is continued) or 'chat' (the model's chat template); picked by measurement."""
    raw_prompt: Callable[[dict], str]
    """Builds the raw-text prompt from normalised inputs."""
    chat_messages: Callable[[dict], list[dict]]
    """Builds the chat messages from normalised inputs (for tokenizer.apply_chat_template)."""
    source: Callable[[dict], str]
    """The text a continuation should relate to (for relevance and coherence): the passage start, the
    user's message, the concept list."""
    decode: dict
    """Default decoding settings (fields of ipa.decoding.run.DecodeConfig)."""
    reward: str
    """The task reward as a formula, for the UI and reports (computed in ipa.tasks.scoring)."""
    demos: tuple[dict, ...]
    """Demo inputs written for the project (at least six)."""
    metrics: tuple[str, ...] = ()
    """Task-specific evaluation metrics reported by ipa.evaluation.evaluate beside the shared ones."""
    notes: str = ""
    """Where the prompt format's measurement is recorded, and other remarks."""
    reward_note: str = ""
    """One line for the page: what the reward measures and what it can miss (so a high score is read with care)."""
    context: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Optional inputs that no box asks for but data sets carry, as (name, allowed values): dialogue_safety's
    request `category` (ipa.rewards.safety.request_category). Kept by normalize when given."""
    instruction: str = ""
    """The task's goal told to the model in words: the "prompted" baseline of ipa.evaluation.compare (build_prompt's
    `instructed`). Empty: the task has none."""
    blocks: tuple[Block, ...] = ()
    """The reward as blocks of an objective (ipa.rewards.objective), scored by the one engine that scores users'
    objectives (ipa.rewards.objective.score, through ipa.tasks.scoring.TaskScorer); `reward` says it in words. A block
    of weight 0 is reported but not in the reward, a hidden one the reverse; a block's floor 0.5 counts it at half
    weight. The blocks read the task's inputs (concepts, knowledge, message, category) and the scores of the blocks
    before them."""
    combination: str = PRODUCT
    """How the blocks make the reward: PRODUCT (R = Π s_i ^ w_i) for the tasks, GEOMETRIC for a user's objective."""
    order: tuple[str, ...] = ()
    """The order the parts are reported in, when it is not the blocks' (see Objective.order)."""
    factors: dict = field(default_factory=dict)
    """Block classes of the task's own, by name, beside ipa.rewards.REWARDS and ipa.rewards.factors.FACTORS."""
    rates: tuple[Rate, ...] = ()
    """Shares of samples passing a test, reported by the evaluation beside the shared metrics (ipa.tasks.metrics)."""
    data: str | dict = ""
    """The default data set under the data folder (ipa.tasks.data.data_dir); a dict gives one per split ('train',
    'eval'), each used whole. '' for none: the task's inputs come from a file the user gives."""
    label: str = ""
    """The short name of its tab on the page, so that all seven tabs fit on a laptop screen (the title heads the tab);
    '' for the title."""

    @property
    def uses_toxicity(self) -> bool:
        """Whether its reward runs the toxicity classifier (the page names the classifier's backend)."""
        return any(b.reward in TOXICITY_BLOCKS for b in self.blocks)

    @property
    def objective(self) -> Objective:
        """The reward as an objective: the blocks, their combination and the parts' order."""
        return Objective(self.name, self.blocks, combination=self.combination, order=self.order)

    def normalize(self, inputs: dict) -> dict:
        """Check and clean the inputs: every field present and non-empty text; concepts parsed to a list."""
        if not isinstance(inputs, dict):
            raise TaskInputError(f"{self.name}: inputs must be a dict with {', '.join(f.name for f in self.fields)}.")
        clean = {}
        for f in self.fields:
            value = inputs.get(f.name)
            if f.missing(value):
                raise TaskInputError(f"{self.title}: the {f.label.lower()} is missing (field '{f.name}').")
            texts = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(t, str) and not _valid_unicode(t) for t in texts):
                raise TaskInputError(f"{self.title}: the {f.label.lower()} (field '{f.name}') contains characters that "
                                     "are not valid Unicode text; remove them and try again.")
            if f.kind == "concepts":
                try:
                    concepts = parse_concepts(value)
                except TypeError as err:
                    raise TaskInputError(f"{self.title}: {err}") from None
                if not MIN_CONCEPTS <= len(concepts) <= MAX_CONCEPTS:
                    raise TaskInputError(f"{self.title}: give {MIN_CONCEPTS} to {MAX_CONCEPTS} concepts, got {len(concepts)} "
                                         f"({', '.join(concepts) or 'none'}).")
                clean[f.name] = concepts
            else:
                if not isinstance(value, str):
                    raise TaskInputError(f"{self.title}: '{f.name}' must be text, got {type(value).__name__}.")
                clean[f.name] = value.strip()
        for name, allowed in self.context:
            if inputs.get(name) is not None:
                if inputs[name] not in allowed:
                    raise TaskInputError(f"{self.title}: '{name}' must be one of {', '.join(allowed)}, got {inputs[name]!r}.")
                clean[name] = inputs[name]
        return clean

    def build_prompt(self, inputs: dict, tokenizer, prompt_format: str | None = None, instructed: bool = False) -> str:
        """The model's prompt for these inputs: raw text, or the chat template with the generation prompt.

        Whatever the user typed stays text: special-token strings in it are broken (escape_special_tokens), so
        only the template's own markers become special tokens when the prompt is tokenised.

        instructed: tell the model the task's goal (`instruction`): a raw prompt starts with it, on a line of its
        own, then a blank line; a chat gets it as the system message (after the task's own system text, if any).

        >>> TASKS["sentiment"].build_prompt({"text": "My day was"}, tokenizer, instructed=True)    # doctest: +SKIP
        'Continue the text in a warm, positive tone.\\n\\nMy day was'
        """
        prompt_format = prompt_format or self.prompt_format
        if prompt_format not in PROMPT_FORMATS:
            raise TaskInputError(f"Unknown prompt format {prompt_format!r}: use raw or chat.")
        if instructed and not self.instruction:
            raise TaskInputError(f"The {self.name} task has no instruction to tell the model its goal.")
        inputs = {k: escape_special_tokens(v, tokenizer) for k, v in self.normalize(inputs).items()}
        if prompt_format == "raw":
            prompt = self.raw_prompt(inputs)
            return f"{self.instruction}\n\n{prompt}" if instructed else prompt
        messages = self.chat_messages(inputs)
        if instructed:
            if messages[0]["role"] == "system":
                messages = [{**messages[0], "content": f"{messages[0]['content']}\n\n{self.instruction}"}, *messages[1:]]
            else:
                messages = [{"role": "system", "content": self.instruction}, *messages]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def source_text(self, inputs: dict) -> str:
        return self.source(self.normalize(inputs))

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def primary_field(self) -> str:
        """The field one line of text fills (a command line's --prompt, a plain-text prompts file): the text to
        continue, the concepts or the user's message; knowledge_dialogue's passage comes separately.

        >>> from ipa.tasks import TASKS
        >>> TASKS["commongen"].primary_field, TASKS["knowledge_dialogue"].primary_field
        ('concepts', 'message')
        """
        return next(f.name for f in self.fields if f.name != "knowledge")



WORD_JOINER = "\u2060"
"""An invisible character that joins, never breaks, words: put inside a special-token string typed by a user."""


def special_token_strings(tokenizer) -> list[str]:
    """Every string the tokenizer turns into one special or added token, longest first."""
    strings = set(getattr(tokenizer, "all_special_tokens", None) or ())
    strings |= {token.content for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values()}
    return sorted((s for s in strings if s), key=len, reverse=True)


def escape_special_tokens(value, tokenizer):
    """User text (or a list of texts) in which no special token can hide: each special-token string gets a word
    joiner after its first character, so the tokenizer reads it as plain text and a person reads the same text.

    Why in the text and not in token ids: every consumer of a prompt (the engine, training, the CLIs and a
    black-box base behind an API, which tokenises on the server) takes text, and all of them then tokenise it
    the same safe way. The price is two extra byte tokens per typed marker.

    >>> escape_special_tokens("hi<|im_end|>", tokenizer) == "hi<\u2060|im_end|>"    # doctest: +SKIP
    True
    """
    if isinstance(value, (list, tuple)):
        return [escape_special_tokens(v, tokenizer) for v in value]
    for special in special_token_strings(tokenizer):
        # A one-character special token cannot be broken: it becomes the replacement character.
        broken = special[0] + WORD_JOINER + special[1:] if len(special) > 1 else "\ufffd"
        while special in value:  # a loop: overlapping occurrences ("<<|x|>|x|>") need more than one pass
            value = value.replace(special, broken)
    return value


def _continue_messages(inputs: dict) -> list[dict]:
    return [{"role": "user", "content": f"Continue this text:\n\n{inputs['text']}"}]


def first_sentences(text: str, max_chars: int = 700) -> str:
    # Keep whole sentences up to max_chars: a 135M model loses the thread in long passages.
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    kept = ""
    for sentence in sentences:
        if kept and len(kept) + 1 + len(sentence) > max_chars:
            break
        kept = f"{kept} {sentence}".strip()
    return kept[:max_chars]


TEXT_FIELD = InputField("text", "Text to continue", "text", "The city council met on Tuesday to discuss", 3)
"""The one box of a task that continues a text."""


def _text(inputs: dict) -> str:
    return inputs["text"]


def continuation(**definition) -> Task:
    """A task that continues the user's text as it is: the text is the one field, the raw prompt and the source
    (toxicity, open_ended, sentiment); `definition` gives the rest of the Task's fields."""
    return Task(fields=(TEXT_FIELD,), prompt_format="raw", raw_prompt=_text, chat_messages=_continue_messages,
                source=_text, **definition)


def _joined_lines(text: str) -> list[str]:
    """The lines of a text block, a line that starts with spaces (after the block's own indent) joined to the one
    before it with one space, blank lines dropped."""
    lines: list[str] = []
    for line in textwrap.dedent(text).strip("\n").splitlines():
        if line[:1].isspace() and lines:
            lines[-1] = f"{lines[-1]} {line.strip()}"
        elif line.strip():
            lines.append(line.strip())
    return lines


def prose(text: str) -> dict[str, str]:
    """A task's one-line texts (label, title, description, reward, notes, reward_note, instruction) from a text block of
    `field: text` lines; a line that starts with spaces continues the one before, so a long text wraps.

    >>> prose('''
    ...     title: Positive sentiment
    ...     notes: Measured base reward:
    ...       raw 0.471, chat 0.412.''')
    {'title': 'Positive sentiment', 'notes': 'Measured base reward: raw 0.471, chat 0.412.'}
    """
    found = {}
    for line in _joined_lines(text):
        name, sep, value = line.partition(": ")
        if not sep or not name.isidentifier():
            raise ValueError(f"A task's text line must be `field: text`, got {line!r}.")
        found[name] = value
    return found


def demos(task_fields: tuple[InputField, ...], text: str) -> tuple[dict, ...]:
    """Demo inputs from a text block: one demo a line, its fields' values in the fields' order separated by " | "; a
    line that starts with spaces continues the one before (a long passage); a concepts field's value is split into
    its words.

    >>> demos((InputField("concepts", "Concepts", "concepts"),), '''
    ...     dog frisbee catch
    ...     chef knife onion cut''')
    ({'concepts': ['dog', 'frisbee', 'catch']}, {'concepts': ['chef', 'knife', 'onion', 'cut']})
    """
    found = []
    for line in _joined_lines(text):
        values = line.split(" | ")
        if len(values) != len(task_fields):
            raise ValueError(f"The demo {line!r} gives {len(values)} values for the fields {', '.join(f.name for f in task_fields)}.")
        found.append({f.name: parse_concepts(v) if f.kind == "concepts" else v for f, v in zip(task_fields, values)})
    return tuple(found)
