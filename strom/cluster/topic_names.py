"""Kafka's rules for topic names.

Legal: 1..249 characters of ASCII letters, digits, '.', '_' and '-', and not '.' or '..'.
Internal names (`__consumer_offsets`, `__transaction_state`) are reserved for the broker.
Two names that differ only by '.' versus '_' collide (their metric names would be equal).
"""

from __future__ import annotations

import re

from strom.protocol.errors import InvalidTopic

MAX_NAME_LENGTH = 249
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
_LEGAL = re.compile(r"[a-zA-Z0-9._-]+")


def validate(name: str | None) -> None:
    """Raise InvalidTopic (INVALID_TOPIC_EXCEPTION) for an illegal name."""
    if not name:
        raise InvalidTopic("Topic name is illegal, it can't be empty")
    if name in (".", ".."):
        raise InvalidTopic("Topic name cannot be \".\" or \"..\"")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidTopic(f"Topic name is illegal, it can't be longer than "
                           f"{MAX_NAME_LENGTH} characters, topic name: {name}")
    if not _LEGAL.fullmatch(name):
        raise InvalidTopic(f"Topic name \"{name}\" is illegal, it contains a character other "
                           f"than ASCII alphanumerics, '.', '_' and '-'")


def unify_collision_chars(name: str) -> str:
    return name.replace(".", "_")


def has_collision_chars(name: str) -> bool:
    return "." in name and "_" in name


def check_collision(name: str, existing: set[str]) -> None:
    unified = unify_collision_chars(name)
    for other in existing:
        if other != name and unify_collision_chars(other) == unified:
            raise InvalidTopic(f"Topic '{name}' collides with existing topic: {other}")


def collision_warning(name: str) -> str | None:
    if has_collision_chars(name):
        return ("WARNING: Due to limitations in metric names, topics with a period ('.') or "
                "underscore ('_') could collide. To avoid issues it is best to use either, "
                "but not both.")
    return None


def is_internal(name: str) -> bool:
    return name in INTERNAL_TOPICS
