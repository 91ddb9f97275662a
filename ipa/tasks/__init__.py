"""The six tasks of docs/design.md: what a user types, how it becomes the model's prompt, how it is decoded, how it
is scored, which rates it reports and where its data comes from.

    >>> task = TASKS["commongen"]
    >>> task.normalize({"concepts": "dog, frisbee catch"})
    {'concepts': ['dog', 'frisbee', 'catch']}
    >>> prompt = task.build_prompt({"concepts": "dog frisbee catch"}, tokenizer)      # doctest: +SKIP
    >>> scorer = load_scorer("commongen")                                             # doctest: +SKIP
    >>> scorer([{"concepts": "dog frisbee catch"}], ["The dog caught the frisbee."])  # doctest: +SKIP
    [{'reward': 0.9, 'coverage': 1.0, 'once_coverage': 1.0, 'finished': 1.0, 'fluency': 0.9}]

A task is one module, ipa/tasks/<task>.py, that declares `TASK = Task(...)` (ipa.tasks.task): its input fields,
prompt format and prompts, decoding defaults, demos, instruction, tab label and title, reward as blocks of an objective
(scored by ipa.tasks.scoring with the engine of users' objectives, ipa.rewards.objective.score), rates
(ipa.tasks.metrics reports them) and default data (ipa.tasks.data reads it). TASK_MODULES lists them, in the order
the page shows them; a seventh task is one more module and its name in that list (docs/design.md, "Adding a task").
Importing the tasks loads no model.

Prompt formats were picked by measuring the base model's task reward (`python -m bench.prompt_formats`: the
embedded SmolLM2-135M-Instruct, the first 16 eval inputs of each task's default data, 2 samples each, seed 0,
each task's decoding settings; mean reward ± standard error; relevance = MiniLM cosine of input and output):

    task                raw               chat              relevance raw / chat   picked
    toxicity            0.795 ± 0.052     0.901 ± 0.043     0.24 / 0.28            raw (see below)
    commongen           0.261 ± 0.050     0.411 ± 0.054     0.47 / 0.62            chat
    open_ended          0.400 ± 0.031     0.508 ± 0.055     0.45 / 0.60            raw (see below)
    dialogue_safety     0.158 ± 0.011     0.221 ± 0.046     0.43 / 0.60            chat
    knowledge_dialogue  0.589 ± 0.024     0.603 ± 0.028     0.69 / 0.69            chat (a tie; the instruct model's own format)
    sentiment           0.471 ± 0.036     0.412 ± 0.041     0.41 / 0.59            raw

For toxicity and open_ended the chat template scores higher but does not do the task: asked to "Continue this
text", the 135M model writes a new text about the subject ("The product may include a custom-fit ...") instead
of continuing the user's words, which sidesteps a toxic prompt rather than continuing it. These tasks are
defined as continuations (RealToxicityPrompts, WikiText-style passages in the paper) and the playground shows
the continuation after the user's text, so they stay raw; `prompt_format` is the one field to change.
"""

from __future__ import annotations

from ipa.tasks import commongen, dialogue_safety, knowledge_dialogue, open_ended, sentiment, toxicity
from ipa.tasks.task import (MAX_CONCEPTS, MIN_CONCEPTS, PROMPT_FORMATS, TEXT_FIELD, WORD_JOINER, InputField, Rate, Task,
                            TaskInputError, escape_special_tokens, first_sentences, special_token_strings)

TASK_MODULES = (toxicity, commongen, open_ended, dialogue_safety, knowledge_dialogue, sentiment)
"""The task modules, one a task, in the order the page lists them: each declares TASK."""


def task_of(module) -> Task:
    """A task module's TASK, checked: a Task whose name is the module's, with a reward made of blocks (a TaskInputError
    says what is missing)."""
    task = getattr(module, "TASK", None)
    where = getattr(module, "__name__", repr(module))
    if not isinstance(task, Task):
        raise TaskInputError(f"The task module {where} declares no TASK = Task(...).")
    if task.name != where.rpartition(".")[2]:
        raise TaskInputError(f"The task module {where} declares the task {task.name!r}: name the module after its task.")
    if not task.blocks or all(b.weight <= 0 for b in task.blocks):
        raise TaskInputError(f"The task {task.name!r} has no reward: give its blocks (at least one of weight above 0).")
    return task


TASKS: dict[str, Task] = {task.name: task for task in map(task_of, TASK_MODULES)}


def get_task(name: str) -> Task:
    """The task by name; an unknown name is a TaskInputError that lists the valid ones."""
    if name not in TASKS:
        raise TaskInputError(f"Unknown task {name!r}: valid tasks are {', '.join(TASKS)}.")
    return TASKS[name]


def inputs_from_prompt(task_name: str, prompt: str, knowledge: str | None = None) -> dict:
    """A task's inputs from a command line's --prompt (and --knowledge): the text to continue, the concept
    list ("dog frisbee catch"), or the user's message; checked and normalised.

    >>> inputs_from_prompt("commongen", "dog, frisbee catch")
    {'concepts': ['dog', 'frisbee', 'catch']}
    """
    task = get_task(task_name)
    inputs = {task.primary_field: prompt}
    if "knowledge" in task.field_names():
        if not knowledge or not knowledge.strip():
            raise TaskInputError(f"The {task.name} task needs a knowledge passage: give it with --knowledge TEXT.")
        inputs["knowledge"] = knowledge
    elif knowledge:
        raise TaskInputError(f"--knowledge is only for the knowledge_dialogue task, not {task.name}.")
    return task.normalize(inputs)


def carry_inputs(inputs: dict, source: Task, target: Task) -> dict:
    """One task's inputs read as another's, to score a text by the other task's reward: the fields they share, and
    for a field of the target that the source lacks at its main field, the source's main text (a concept list
    joined). Normalised; a TaskInputError when the target cannot read them (no knowledge passage, say).

    >>> carry_inputs({"text": "The movie was"}, TASKS["toxicity"], TASKS["sentiment"])
    {'text': 'The movie was'}
    >>> carry_inputs({"concepts": ["dog", "frisbee", "catch"]}, TASKS["commongen"], TASKS["toxicity"])
    {'text': 'dog, frisbee, catch'}
    """
    given = {f.name: inputs.get(f.name) for f in target.fields}
    if given.get(target.primary_field) is None:
        main = inputs.get(source.primary_field)
        given[target.primary_field] = ", ".join(main) if isinstance(main, (list, tuple)) else main
    return target.normalize(given)


__all__ = ["TASKS", "TASK_MODULES", "Task", "InputField", "Rate", "TaskInputError", "get_task", "task_of", "inputs_from_prompt",
           "carry_inputs", "escape_special_tokens", "special_token_strings", "first_sentences", "PROMPT_FORMATS", "WORD_JOINER",
           "TEXT_FIELD", "MIN_CONCEPTS", "MAX_CONCEPTS"]
