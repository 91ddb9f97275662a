"""The Training tab's own objective: the form's reward blocks made into an Objective (page_objective), and the
prompts a user pastes or uploads for it, checked (pasted_prompts, uploaded_prompts) and written into the run's folder
(write_prompts). No Gradio and no models here: app.training_service checks a request with them, app.ui lays out the
form with their limits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from app.config import ServiceError
from ipa.rewards.objective import Objective, ObjectiveError
from ipa.tasks.objective import FILE_PROMPTS, MIN_FILE_PROMPTS, PROMPT_SETS

PAGE_BLOCKS = 3
"""Reward blocks the Training tab offers for "your own objective" (a file may hold more: ipa.rewards.objective)."""
NO_BLOCK = "none"
"""A block row of the page left empty."""


MAX_PROMPT_LINES = 2000
"""Prompts a user may paste or upload for an objective (one a line, or one a JSONL row)."""
MAX_PROMPTS_KB = 256
"""The most text a user may paste as prompts, and the largest prompts file they may upload."""
PROMPTS_FILE = "prompts.txt"
"""Pasted or uploaded prompts, written into the run's folder beside its objective.json (which names this file);
prompts.jsonl instead when one of them spans several lines (a JSONL row's text may)."""
PROMPT_FILE_TYPES = (".txt", ".jsonl")
"""What the page takes as a prompts file: one prompt a line, or JSONL rows as ipa.tasks.data reads them."""


def pasted_prompts(text: str, max_chars: int) -> list[str]:
    """Prompts pasted in the page, one a line (blank lines left out), checked: at most MAX_PROMPTS_KB of text and
    MAX_PROMPT_LINES lines, none longer than max_chars, at least MIN_FILE_PROMPTS (one in five is held back).

    >>> pasted_prompts("\n".join(f"The harbour {i}" for i in range(12)), 2000)[:2]
    ['The harbour 0', 'The harbour 1']
    """
    if not isinstance(text, str):
        raise ServiceError(f"Pasted prompts must be text, one prompt a line, got {type(text).__name__}.")
    size = len(text.encode("utf-8"))
    if size > MAX_PROMPTS_KB * 1024:
        raise ServiceError(f"The pasted prompts are {size / 1024:,.0f} KB; the page takes at most {MAX_PROMPTS_KB} KB.")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_PROMPT_LINES:
        raise ServiceError(f"{len(lines):,} prompts were pasted; the page takes at most {MAX_PROMPT_LINES:,}, one a line.")
    long = [i for i, line in enumerate(lines, 1) if len(line) > max_chars]
    if long:
        raise ServiceError(f"Pasted prompt{'s' * (len(long) > 1)} {', '.join(map(str, long[:5]))}{' ...' * (len(long) > 5)} "
                           f"{'are' if len(long) > 1 else 'is'} longer than {max_chars:,} characters: shorten them.")
    if len(lines) < MIN_FILE_PROMPTS:
        raise ServiceError(f"{len(lines)} prompt{'s' * (len(lines) != 1)} pasted: give at least {MIN_FILE_PROMPTS}, one a line "
                           "(one in five is held back for the before/after evaluation).")
    return lines


def uploaded_prompts(path: str | os.PathLike, max_chars: int) -> list[str]:
    """Prompts from a file uploaded in the page (the path where the upload widget stored it; never one a user
    typed): a .txt, one prompt a line, or a .jsonl, one row a line read as ipa.tasks.data reads rows ({"text": ...},
    {"prompt": ...}, {"prompt": {"text": ...}} or a JSON string). Checked as pasted prompts are (MAX_PROMPTS_KB,
    MAX_PROMPT_LINES, max_chars a prompt, at least MIN_FILE_PROMPTS), and refused with one message naming the file
    (and the line, for a bad row) when it is empty, not UTF-8 text, or a row is not JSON or holds no prompt.

    >>> import pathlib, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "sea.jsonl"
    >>> _ = f.write_text("".join(f'{{"text": "The tide {i}"}}\\n' for i in range(10)))
    >>> uploaded_prompts(f, 2000)[:2]
    ['The tide 0', 'The tide 1']
    """
    from ipa.tasks.data import read_row  # ipa.tasks.data's reading of one row (a JSON string or object)

    path = Path(path)
    name, kind = path.name, path.suffix.lower()
    if kind not in PROMPT_FILE_TYPES:
        raise ServiceError(f"{name} is not a prompts file the page takes: upload a .txt (one prompt a line) or a .jsonl "
                           '(one JSON row a line, such as {"text": "The harbour was quiet"}).')
    size = path.stat().st_size
    if size > MAX_PROMPTS_KB * 1024:
        raise ServiceError(f"{name} is {size / 1024:,.0f} KB; the page takes prompts files of at most {MAX_PROMPTS_KB} KB.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not part of the first prompt
        junk = raw.index(b"\x00") if b"\x00" in raw else None  # valid UTF-8, but binary files are full of them
    except UnicodeDecodeError as err:
        junk = err.start
    if junk is not None:
        raise ServiceError(f"{name} is not a text file (byte {junk:,} is not text): upload a .txt or .jsonl file saved as "
                           "UTF-8 text.")
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ServiceError(f"{name} is empty: give at least {MIN_FILE_PROMPTS} prompts, one a line.")
    if len(lines) > MAX_PROMPT_LINES:
        raise ServiceError(f"{name} holds {len(lines):,} lines; the page takes at most {MAX_PROMPT_LINES:,} prompts.")
    prompts = []
    for n, line in lines:
        try:
            row = json.loads(line) if kind == ".jsonl" else line
        except json.JSONDecodeError as err:  # worded as ipa.tasks.data words it
            raise ServiceError(f"{name}, line {n}: not valid JSON ({err.msg}).") from None
        item = read_row(FILE_PROMPTS.data_task, row)
        if item is None:
            raise ServiceError(f"{name}, line {n}: " + ('no prompt in this row; give each row a text, such as '
                                                        '{"text": "The harbour was quiet"}.' if kind == ".jsonl" else
                                                        "not usable as a prompt."))
        prompts.append((n, item[1][FILE_PROMPTS.field]))
    long = [n for n, prompt in prompts if len(prompt) > max_chars]
    if long:
        raise ServiceError(f"{name}: the prompt{'s' * (len(long) > 1)} on line{'s' * (len(long) > 1)} "
                           f"{', '.join(map(str, long[:5]))}{' ...' * (len(long) > 5)} {'are' if len(long) > 1 else 'is'} "
                           f"longer than {max_chars:,} characters: shorten {'them' if len(long) > 1 else 'it'}.")
    if len(prompts) < MIN_FILE_PROMPTS:
        raise ServiceError(f"{name} holds {len(prompts)} prompt{'s' * (len(prompts) != 1)}: give at least {MIN_FILE_PROMPTS} "
                           "(one in five is held back for the before/after evaluation).")
    return [prompt for _, prompt in prompts]


def write_prompts(run_dir: Path, prompts: list[str]) -> str:
    """Write a run's pasted or uploaded prompts beside its objective.json; the file's name, for the objective's
    "prompts": PROMPTS_FILE, one a line, or prompts.jsonl when a prompt spans lines."""
    if any("\n" in p or "\r" in p for p in prompts):
        name = Path(PROMPTS_FILE).with_suffix(".jsonl").name
        (run_dir / name).write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts), encoding="utf-8")
        return name
    (run_dir / PROMPTS_FILE).write_text("\n".join(prompts) + "\n", encoding="utf-8")
    return PROMPTS_FILE


def page_objective(name: str, prompts: str, blocks: list[tuple]) -> Objective:
    """The objective the Training tab describes: a name, a prompt set's name (never a file: the page reads no path
    a user typed) and up to PAGE_BLOCKS rows (reward name, weight, its parameters as a JSON object or empty); rows
    whose reward is empty or NO_BLOCK are left out. ONE ObjectiveError listing every problem.

    >>> page_objective("calm-sea", "passages", [("topic", 1, '{"topic": "the sea"}'), ("none", 1, "")]).to_dict()
    {'name': 'calm-sea', 'blocks': [{'reward': 'topic', 'topic': 'the sea', 'weight': 1.0}], 'prompts': 'passages'}
    """
    problems, raw_blocks = [], []
    if len(blocks) > PAGE_BLOCKS:
        problems.append(f"the page takes at most {PAGE_BLOCKS} blocks, got {len(blocks)}")
    for i, (reward, weight, params) in enumerate(blocks, 1):
        if reward in (None, "", NO_BLOCK):
            continue
        text = (params or "").strip() if isinstance(params, str) else params
        try:
            given = json.loads(text) if isinstance(text, str) and text else (text or {})
        except json.JSONDecodeError as err:
            problems.append(f"block {i} ({reward}): its parameters are not valid JSON ({err.msg}); write an object such as "
                            '{"topic": "the ocean and the sea"}, or leave them empty')
            continue
        if not isinstance(given, dict) or {"reward", "weight"} & set(given):
            problems.append(f"block {i} ({reward}): its parameters must be a JSON object of the reward's parameters "
                            '(without "reward" or "weight", which have their own fields), got ' + repr(params))
            continue
        raw_blocks.append({"reward": reward, "weight": weight, **given})
    if prompts not in PROMPT_SETS:
        problems.append(f"prompts must be one of the prompt sets {', '.join(PROMPT_SETS)}, got {prompts!r}")
    name = name.strip() if isinstance(name, str) else name
    if problems:  # worded as Objective.from_dict's own, which checks the rest
        raise ObjectiveError(f"Objective {name!r} is not valid: " + "; ".join(problems) + ".")
    if not raw_blocks:
        raise ObjectiveError(f"Objective {name!r} has no block: choose at least one reward.")
    return Objective.from_dict({"name": name, "blocks": raw_blocks, "prompts": prompts})
