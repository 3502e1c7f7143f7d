"""Chat turns as episode memories: what each turn stores, and the text its embedding is computed from. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from textual.errors import InvalidMemoryError
from textual.memory import check_time
from textual.relative_time import mentioned_period


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation. `turn_id` becomes the episode's source; `session` groups turns for neighbours."""

    speaker: str
    text: str
    time: float
    session: str = ""
    turn_id: str | None = None
    image_caption: str | None = None

    @classmethod
    def of(cls, value: "ChatMessage | Mapping[str, Any]", index: int) -> "ChatMessage":
        """A checked message from a ChatMessage or a dict with the same keys; errors name `messages[index]`."""
        if isinstance(value, ChatMessage):
            message = value
        elif isinstance(value, Mapping):
            unknown = set(value) - set(cls.__dataclass_fields__)
            if unknown:
                raise InvalidMemoryError(f"messages[{index}]", f"unknown keys {sorted(unknown)}")
            try:
                message = cls(**value)
            except TypeError as error:
                raise InvalidMemoryError(f"messages[{index}]", str(error)) from None
        else:
            raise InvalidMemoryError(f"messages[{index}]", "must be a ChatMessage or a dict")
        for name in ("speaker", "text"):
            if not isinstance(getattr(message, name), str) or not getattr(message, name).strip():
                raise InvalidMemoryError(f"messages[{index}].{name}", "must be a non-empty string")
        check_time(f"messages[{index}].time", message.time)
        return message


def episode_content(message: ChatMessage) -> str:
    """The stored content of a turn: its text, plus the caption of an image it shared."""
    if message.image_caption:
        return f"{message.text} [shares image: {message.image_caption}]"
    return message.text


def episode_metadata(message: ChatMessage, position: int) -> dict[str, Any]:
    """Speaker, session and the turn's position within its session (for neighbours and ordering), and when the turn
    speaks of a relative time ("last Saturday"), the `mentioned_time` [start, end) it resolves to on the day said."""
    metadata = {"speaker": message.speaker, "session": message.session, "position": position}
    period = mentioned_period(message.text, message.time)
    if period is not None:
        metadata["mentioned_time"] = list(period)
    return metadata


def embedding_text(speaker: str, content: str, previous: tuple[str, str] | None) -> str:
    """What an episode's embedding is computed from: the turn, preceded by the turn it answers, if any.

    A reply like "Yes, last Sunday!" means little alone; with the question before it, it is findable.
    """
    turn = f"{speaker}: {content}"
    return turn if previous is None else f"{previous[0]}: {previous[1]}\n{turn}"
