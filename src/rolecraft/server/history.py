"""Turning what a chat front end sends into the agent's memory and the new user message.

Front ends such as SillyTavern send their own system prompts (several, anywhere), `name` fields,
runs of messages from one role, and the character's greeting as a first assistant message. The
character's persona comes from the server, so system messages are dropped; runs of one role are
joined; a greeting before the first user message goes into the running summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..agent import Memory, Turn
from ..llm.base import Message
from .protocol import ApiError


@dataclass
class Conversation:
    message: str  # the new user message
    turns: list[Turn] = field(default_factory=list)  # earlier (user, reply) pairs
    opening: str = ""  # what the character said before the user's first message

    def memory(self, character_name: str) -> Memory:
        summary = f'{character_name} opened the conversation saying: "{self.opening}"' if self.opening else ""
        return Memory(summary=summary, recent=list(self.turns), log=list(self.turns))


def conversation(messages: list[Message]) -> Conversation:
    """Split chat messages; the last one (after system messages are dropped) must be the user's."""
    runs: list[tuple[str, list[str]]] = []
    for m in messages:
        if m["role"] not in ("user", "assistant"):
            continue
        text = m["content"].strip()
        if runs and runs[-1][0] == m["role"]:
            runs[-1][1].append(text)
        else:
            runs.append((m["role"], [text]))
    joined = [(role, "\n".join(t for t in texts if t)) for role, texts in runs]
    if not joined or joined[-1][0] != "user" or not joined[-1][1]:
        raise ApiError(
            400,
            "The last message (system messages aside) must be a non-empty user message.",
            param="messages",
            code="no_user_message",
        )
    opening = joined.pop(0)[1] if joined[0][0] == "assistant" else ""
    message = joined.pop()[1]
    turns = [Turn(joined[i][1], joined[i + 1][1]) for i in range(0, len(joined), 2)]
    return Conversation(message, turns, opening)
