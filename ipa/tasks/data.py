"""Task inputs from data sets: the project's own (data/, see data/README.md), a user's file, or the Hugging Face hub.

    >>> train = load_inputs("toxicity", None, split="train", limit=64)   # RealToxicityPrompts, 4 files  # doctest: +SKIP
    >>> evals = load_inputs("commongen", None, split="eval")             # CommonGen dev                 # doctest: +SKIP
    >>> load_inputs("dialogue_safety", "my_requests.txt", split="all")   # one request a line            # doctest: +SKIP

Formats (picked by the path; a folder reads every .txt/.jsonl/.json file in it, sorted by name):
- `.txt`: one input a line (a prompt to continue, a user message, or a concept set "dog frisbee catch");
  for knowledge_dialogue a line is "knowledge<TAB>message".
- `.jsonl` (or a `.json` list): rows with `concept_set` ("dog_N#catch_V"), `concepts`, `prompt`, or the
  task's own field names (`text`, `message`, `knowledge`).
- `.json` object `{title: {title, extract, description}}` (Wikipedia summaries): knowledge_dialogue gets
  the extract as knowledge and a question about the title from QUESTION_TEMPLATES; open_ended, sentiment
  and toxicity get the start of the extract's first sentence to continue.
- `hub:owner/name` (optionally `hub:owner/name:config`): a Hugging Face dataset, with the `datasets`
  package and network access.

Train / eval split: an input goes to eval when a hash of its identity (its text; a CommonGen set's sorted
concepts; a Wikipedia article's title) falls in 1 of EVAL_SHARE_INVERSE buckets, so training never sees
evaluation inputs, whichever file they are read from. Inputs come in a fixed pseudo-random order (by that
hash), so a `limit` takes a mix of the whole source. Sources with their own split (CommonGen's train
concepts and dev set, the defaults for commongen) are used whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from ipa.errors import UserError
from ipa.rewards.safety import request_category
from ipa.tasks import TASKS, TaskInputError, first_sentences, get_task

SPLITS = ("train", "eval", "all")
EVAL_SHARE_INVERSE = 5
"""One input in five goes to the eval split."""
REPO_ROOT = Path(__file__).resolve().parents[2]
QUESTION_TEMPLATES = (
    "What can you tell me about {title}?",
    "I've been reading about {title}. What is it known for?",
    "Can you explain {title} to me in simple terms?",
    "Why is {title} important?",
    "I never really understood {title}. What is it?",
    "What should I know about {title}?",
)
DEFAULT_SOURCES = {name: task.data for name, task in TASKS.items()}
"""Each task's default data under the data folder (its module's TASK.data); a dict gives a source per split (used whole)."""
# Hugging Face datasets we know how to read: name -> (split, function row -> primary text or concepts).
HUB_READERS = {
    "allenai/real-toxicity-prompts": ("train", lambda row: row["prompt"]["text"]),
    "allenai/common_gen": ("validation", lambda row: row["concepts"]),
    "LibrAI/do-not-answer": ("train", lambda row: row["question"]),
}


class DataError(UserError):
    """A data set cannot be read: missing file, unknown format, no usable lines; the message says which."""


def data_dir() -> Path:
    """Where the task's default data sets live: $IPA_DATA_DIR, else the repository's data/ folder."""
    return Path(os.environ.get("IPA_DATA_DIR") or REPO_ROOT / "data")


def split_of(key: str) -> str:
    """'eval' or 'train' for an input's identity key, fixed forever (SHA-1 based, not Python's hash)."""
    return "eval" if _bucket(key) % EVAL_SHARE_INVERSE == 0 else "train"


def _bucket(key: str) -> int:
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16)


def _primary_field(task_name: str) -> str:
    return TASKS[task_name].primary_field


def _grounded(task_name: str) -> bool:
    """Whether the task's inputs are a knowledge passage and a message (knowledge_dialogue), by its fields."""
    return "knowledge" in TASKS[task_name].field_names()


def _concept_task(task_name: str) -> bool:
    """Whether the task's main input is a concept set (commongen), by its fields."""
    task = TASKS[task_name]
    return any(f.name == task.primary_field and f.kind == "concepts" for f in task.fields)


def _item(task_name: str, value, key: str | None = None) -> tuple[str, dict] | None:
    """(identity key, inputs) for a primary value, or None when it is not usable for the task."""
    task = TASKS[task_name]
    inputs = {_primary_field(task_name): value}
    try:
        inputs = task.normalize(inputs)
    except TaskInputError:
        return None
    if key is None:
        key = " ".join(sorted(inputs["concepts"])) if _concept_task(task_name) else inputs[_primary_field(task_name)]
    return key, inputs


def _knowledge_item(task_name: str, knowledge: str, message: str, key: str | None = None) -> tuple[str, dict] | None:
    try:
        inputs = TASKS[task_name].normalize({"knowledge": knowledge, "message": message})
    except TaskInputError:
        return None
    return key or f"{inputs['knowledge']}\n{inputs['message']}", inputs


def passage_start(text: str) -> str | None:
    """The first half of the first sentence, 6 to 14 words, as a neutral prompt to continue.

    >>> passage_start("Bread is a staple food prepared from a dough of flour and water, usually by baking.")
    'Bread is a staple food prepared from a'
    """
    first = re.split(r"(?<=[.!?])\s+", text.strip())[0]
    tokens = first.split()
    if len(tokens) < 8:
        return None
    return " ".join(tokens[: max(6, min(14, len(tokens) // 2))]).rstrip(",;:")


# --- readers: path -> list of (key, inputs) ---------------------------------------------------------------


def _read_lines(task_name: str, path: Path) -> list[tuple[str, dict] | None]:
    items = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        if _grounded(task_name):
            knowledge, _, message = line.partition("\t")
            items.append(_knowledge_item(task_name, knowledge, message) if message else None)
        else:
            items.append(_item(task_name, line))
    return items


def read_row(task_name: str, row) -> tuple[str, dict] | None:
    if not isinstance(row, dict):
        return _item(task_name, row) if isinstance(row, str) else None
    if _grounded(task_name):
        return _knowledge_item(task_name, row.get("knowledge", ""), row.get("message") or row.get("prompt") or "")
    if _concept_task(task_name):
        concepts = row.get("concepts") or row.get("concept_set")
        return _item(task_name, concepts) if concepts else None
    value = row.get(_primary_field(task_name)) or row.get("prompt") or row.get("text") or row.get("message")
    if isinstance(value, dict):  # RealToxicityPrompts rows: {"prompt": {"text": ...}}
        value = value.get("text")
    if not isinstance(value, str):
        return None
    item = _item(task_name, value)
    if item and "category" in dict(TASKS[task_name].context):  # Do-Not-Answer rows: the request's category from its intents
        item[1]["category"] = row.get("category") or request_category(value, row.get("intents"))
    return item


def _read_jsonl(task_name: str, path: Path) -> list[tuple[str, dict] | None]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {number}: not valid JSON ({err.msg}).") from None
        items.append(read_row(task_name, row))
    return items


def _read_wiki(task_name: str, articles: dict) -> list[tuple[str, dict] | None]:
    items = []
    for title, article in articles.items():
        if not isinstance(article, dict) or not isinstance(article.get("extract"), str):
            items.append(None)
            continue
        extract, name = article["extract"].strip(), article.get("title") or title
        if _grounded(task_name):
            if len(extract) < 100:
                items.append(None)
                continue
            question = QUESTION_TEMPLATES[_bucket(name) % len(QUESTION_TEMPLATES)].format(title=name)
            # The passage as the prompt shows it (whole sentences, up to 700 characters), so that the
            # faithfulness reward reads the same knowledge the model saw.
            items.append(_knowledge_item(task_name, first_sentences(extract), question, key=f"wiki:{name}"))
        elif _concept_task(task_name):
            items.append(None)
        else:
            start = passage_start(extract)
            items.append(_item(task_name, start, key=f"wiki:{name}") if start else None)
    return items


def _read_json(task_name: str, path: Path) -> list[tuple[str, dict] | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err.msg}, line {err.lineno}).") from None
    if isinstance(data, list):
        return [read_row(task_name, row) for row in data]
    if isinstance(data, dict) and all(isinstance(v, dict) and "extract" in v for v in list(data.values())[:5]):
        return _read_wiki(task_name, data)
    raise DataError(f"{path}: expected a list of rows or Wikipedia summaries {{title: {{title, extract}}}}.")


READERS = {".txt": _read_lines, ".jsonl": _read_jsonl, ".json": _read_json}


def _read_path(task_name: str, path: Path) -> list[tuple[str, dict] | None]:
    if not path.exists():
        raise DataError(f"The data file {path} does not exist.")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in READERS and p.is_file())
        if not files:
            raise DataError(f"The folder {path} holds no .txt, .jsonl or .json file.")
        return [item for p in files for item in READERS[p.suffix](task_name, p)]
    if path.suffix not in READERS:
        raise DataError(f"{path}: unknown format {path.suffix or '(no extension)'}; use .txt (one input a line), .jsonl or .json.")
    return READERS[path.suffix](task_name, path)


def _read_hub(task_name: str, spec: str) -> list[tuple[str, dict] | None]:
    name, _, config = spec.partition(":")
    try:
        import datasets
    except ImportError:
        raise DataError(f"Loading hub:{spec} needs the `datasets` package (pip install datasets) and network access.") from None
    split, reader = HUB_READERS.get(name, ("train", None))
    try:
        rows = datasets.load_dataset(name, config or None, split=split)
    except Exception as err:  # noqa: BLE001 - offline, unknown name, ...: all one user error
        raise DataError(f"Could not load hub:{spec} (it needs network access): {type(err).__name__}: {err}") from None
    if reader is None:
        return [read_row(task_name, dict(row)) for row in rows]
    return [_item(task_name, reader(row)) for row in rows]


def load_inputs(task_name: str, path: str | os.PathLike | None = None, split: str = "train",
                limit: int | None = None) -> list[dict]:
    """The task's inputs from a data set, one dict of its fields each.

    path: a file or folder in one of the formats above, `hub:owner/name`, or None for the task's default
    data under data_dir(). split: 'train', 'eval' (disjoint, by hash) or 'all'. limit: at most this many
    (a pseudo-random but fixed selection). Unusable rows (too few concepts, empty lines) are skipped;
    DataError when nothing usable is left.
    """
    task = get_task(task_name)
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}: use train, eval or all.")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1, got {limit}.")
    whole = False
    if path is None:
        default = task.data
        if not default:
            raise DataError(f"The {task.name} task has no default data: give a data file.")
        if isinstance(default, dict):
            whole = split in default
            default = default.get(split) or default["train"]
        path = data_dir() / default
    if str(path).startswith("hub:"):
        items = _read_hub(task.name, str(path)[4:])
    else:
        items = _read_path(task.name, Path(path).expanduser())
    usable = [item for item in items if item is not None]
    if not usable:
        raise DataError(f"{path} has no usable inputs for the {task.name} task ({len(items)} rows read; "
                        f"it needs {', '.join(task.field_names())}).")
    unique = dict(usable)  # one input per identity key, first wins
    chosen = [(k, v) for k, v in unique.items() if whole or split == "all" or split_of(k) == split]
    if not chosen:
        raise DataError(f"{path} has no inputs in the {split} split ({len(unique)} inputs in all): use split='all'.")
    chosen.sort(key=lambda kv: _bucket("order:" + kv[0]))
    inputs = [v for _, v in chosen]
    return inputs[:limit] if limit is not None else inputs
