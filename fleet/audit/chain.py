"""The audit hash chain, in plain Python: no Django, no database.

`services.record()` and `services.verify()` use it on database rows; `verify_export` uses it on a JSON Lines
export with nothing but the standard library, so that an auditor can re-check a file on any machine.

An event's hash is `SHA-256(prev_hash || canonical JSON of its content)`, where the canonical JSON
holds the fields in HASHED_FIELDS with sorted keys, no spaces, UTF-8, and the time in UTC as
`YYYY-MM-DDTHH:MM:SS.ffffffZ`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64

HASHED_FIELDS = (
    "sequence",
    "time",
    "actor_id",
    "actor_name",
    "change_context",
    "request_id",
    "source_address",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "scope_group_id",
    "scope_group_name",
    "cluster_name",
    "repository_name",
    "before",
    "after",
    "message",
    "prev_hash",
)


def time_text(value: datetime | str) -> str:
    """The one text form of an event time that goes into the hash (UTC, microseconds, `Z`)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        raise ValueError("audit event times must be timezone-aware")
    # isoformat() with fixed microseconds is strftime("%Y-%m-%dT%H:%M:%S.%fZ") without the Z, and faster.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def canonical(fields: Mapping[str, Any]) -> str:
    content: dict[str, Any] = {name: fields.get(name) for name in HASHED_FIELDS}
    content["time"] = time_text(fields["time"])
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_hash(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256((fields["prev_hash"] + canonical(fields)).encode()).hexdigest()


@dataclass
class ChainCheck:
    """The outcome of walking a run of events."""

    ok: bool
    checked: int
    last_sequence: int
    last_hash: str
    first_bad_sequence: int | None = None
    first_bad_id: Any = None
    reason: str = ""
    gaps: int = 0


def check_chain(
    events: Iterable[Mapping[str, Any]],
    *,
    start_sequence: int | None = None,
    start_hash: str | None = None,
    allow_gaps: bool = False,
) -> ChainCheck:
    """Walk events in sequence order; stop at the first one whose content, link or position is wrong.

    `start_sequence`/`start_hash` are the event the run continues from (0 and GENESIS_HASH for a chain that
    was never archived). When they are None the run may start anywhere (a file cut from the middle), but its
    first event must still match its own hash. With `allow_gaps` (a filtered export) a jump in sequence is
    counted, not a failure, and the link is checked only between neighbours.
    """
    expected_seq = None if start_sequence is None else start_sequence + 1
    expected_prev = start_hash
    last_seq = start_sequence if start_sequence is not None else 0
    last_hash = start_hash if start_hash is not None else ""
    checked = gaps = 0

    def bad(event: Mapping[str, Any], sequence: int | None, reason: str) -> ChainCheck:
        return ChainCheck(False, checked, last_seq, last_hash, sequence, event.get("id"), reason, gaps)

    for event in events:
        sequence = event.get("sequence")
        if not isinstance(sequence, int):
            return bad(event, None, f"an event after #{last_seq} has no integer sequence")
        if expected_seq is not None and sequence != expected_seq:
            if sequence < expected_seq:
                return bad(event, sequence, f"event #{sequence} is out of order (expected #{expected_seq})")
            if not allow_gaps:
                return bad(
                    event, expected_seq, f"event #{expected_seq} is missing (the next event is #{sequence})"
                )
            gaps += 1
            expected_prev = None
        if sequence == 1 and expected_prev is None:
            expected_prev = GENESIS_HASH
        if expected_prev is not None and event.get("prev_hash") != expected_prev:
            return bad(event, sequence, "link to the previous event is broken (prev_hash does not match)")
        try:
            computed = event_hash(event)
        except (KeyError, TypeError, ValueError) as exc:
            return bad(event, sequence, f"event cannot be hashed: {exc}")
        if computed != event.get("hash"):
            return bad(event, sequence, "content does not match its hash")
        last_seq, last_hash = sequence, computed
        expected_seq, expected_prev = sequence + 1, computed
        checked += 1
    return ChainCheck(True, checked, last_seq, last_hash, gaps=gaps)
