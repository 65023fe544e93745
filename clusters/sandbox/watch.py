"""Watch events and watchers: what a watch stream is made of (see ClusterState.watch)."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Any

from .selectors import Matcher

TypeKey = tuple[str, str]


@dataclass(slots=True)
class Event:
    rv: int
    type: str
    key: TypeKey
    obj: dict[str, Any]
    old: dict[str, Any] | None


class Watcher:
    """A watch's filter and its queue of ``(type, object)`` pairs (None ends the stream)."""

    __slots__ = ("field", "key", "label", "namespace", "queue")

    def __init__(self, key: TypeKey, namespace: str | None, label: Matcher | None, field: Matcher | None):
        self.key = key
        self.namespace = namespace
        self.label = label
        self.field = field
        self.queue: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace and obj["metadata"].get("namespace") != self.namespace:
            return False
        if self.label and not self.label(obj):
            return False
        return not (self.field and not self.field(obj))

    def translate(self, ev: Event) -> tuple[str, dict[str, Any]] | None:
        now_match = self.matches(ev.obj)
        if ev.type == "ADDED":
            return ("ADDED", ev.obj) if now_match else None
        if ev.type == "DELETED":
            return ("DELETED", ev.obj) if now_match or self.matches(ev.old) else None
        was = self.matches(ev.old)
        if now_match:
            return ("MODIFIED" if was else "ADDED", ev.obj)
        return ("DELETED", ev.obj) if was else None
