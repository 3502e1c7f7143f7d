"""The training examples of a distillation: their kinds, their JSONL format, and what memories and facts become.

Kinds: a plain `text` (every token trained), a `question`/`answer` pair (only the answer trained), or a `fact`
about the user, which becomes question/answer pairs before training (`expand_facts`: questions written by the base
model, the fact said back as the answer). A memory record is a fact. JSONL: one {"text"}, {"question", "answer"}
or {"fact"} object per line; every error names the field, or the 1-based line ("line 3").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from adapters.errors import DistillError
from adapters.fact_questions import second_person

MAX_EXAMPLES = 10_000
MAX_EXAMPLE_CHARS = 16_384
RECALL_QUESTION = "What did I tell you about myself?"  # a fact's question when the model wrote none


@dataclass(frozen=True)
class Example:
    """One training example: `text`, or `question` and `answer`, or `fact` (non-empty strings)."""

    text: str | None = None
    question: str | None = None
    answer: str | None = None
    fact: str | None = None

    def __post_init__(self) -> None:
        given = tuple(getattr(self, name) is not None for name in ("text", "question", "answer", "fact"))
        if given not in ((True, False, False, False), (False, True, True, False), (False, False, False, True)):
            raise DistillError("example", "give either text, or question and answer, or fact")
        for name in ("text", "question", "answer", "fact"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise DistillError(name, f"must be a non-empty string, not {value!r}")
            if value is not None and len(value) > MAX_EXAMPLE_CHARS:
                raise DistillError(name, f"{len(value)} characters is over the limit of {MAX_EXAMPLE_CHARS}")

    @property
    def is_qa(self) -> bool:
        return self.question is not None

    @property
    def is_fact(self) -> bool:
        return self.fact is not None


def parse_examples(lines: Iterable[str], max_examples: int = MAX_EXAMPLES) -> tuple[Example, ...]:
    """Examples from JSONL lines, each {"text": ...}, {"question": ..., "answer": ...} or {"fact": ...}; blank
    lines are skipped.

    Errors name the 1-based line number in `field` ("line 3").
    """
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(examples) == max_examples:
            raise DistillError(f"line {number}", f"more than {max_examples} examples")
        examples.append(_parse_line(line, number))
    if not examples:
        raise DistillError("examples", 'no examples: give JSONL lines of {"text"}, {"question", "answer"} or {"fact"}')
    return tuple(examples)


def _parse_line(line: str, number: int) -> Example:
    field = f"line {number}"
    try:
        item = json.loads(line)
    except json.JSONDecodeError as error:
        raise DistillError(field, f"not JSON: {error.msg}") from None
    if not isinstance(item, dict) or set(item) not in ({"text"}, {"question", "answer"}, {"fact"}):
        raise DistillError(field, 'expected {"text": ...}, {"question": ..., "answer": ...} or {"fact": ...}')
    try:
        return Example(**item)
    except DistillError as error:
        raise DistillError(field, f"{error.field}: {error.message}") from None


def load_examples(path: Path, max_examples: int = MAX_EXAMPLES) -> tuple[Example, ...]:
    """The examples of the JSONL file at `path` (see `parse_examples`)."""
    with open(path, encoding="utf-8") as lines:
        return parse_examples(lines, max_examples)


def examples_from_records(records: Iterable[object]) -> tuple[Example, ...]:
    """One fact example per memory record (a mapping or an object with `content`); blank contents are skipped."""
    examples = []
    for index, record in enumerate(records):
        content = record.get("content") if isinstance(record, Mapping) else getattr(record, "content", None)
        if not isinstance(content, str):
            raise DistillError("records", f"record {index} has no text content (content is {type(content).__name__})")
        if content.strip():
            examples.append(Example(fact=content))
    return tuple(examples)


def expand_facts(examples: tuple[Example, ...], questions_for: Callable[[str], list[str]]) -> tuple[Example, ...]:
    """`examples` with each fact replaced by question/answer pairs: the questions `questions_for(fact)` returns
    (`RECALL_QUESTION` when it returns none), each answered with the fact said back to the user."""
    expanded = []
    for example in examples:
        if not example.is_fact:
            expanded.append(example)
            continue
        answer = second_person(example.fact)
        expanded += [Example(question=q, answer=answer) for q in questions_for(example.fact) or [RECALL_QUESTION]]
    return tuple(expanded)
