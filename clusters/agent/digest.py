"""The content digest of a Work item, shared by Fleetgate (which sends it) and the agent (which checks it).

Both sides compute it with this one function, so a Work whose objects, inventory or prune flag changed in
transit (or were tampered with) fails the check and is not applied. It imports nothing from Django.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any


def work_digest(objects: list[Any], inventory: list[Any], prune: bool) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of ``{"objects", "inventory", "prune"}``.

    Canonical: keys sorted, no whitespace (``separators=(",", ":")``), UTF-8; list order is kept (it is
    the apply order and the inventory's order, both part of what is signed off).
    """
    payload = json.dumps(
        {"objects": objects, "inventory": inventory, "prune": bool(prune)},
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()


def digest_matches(expected: str, objects: list[Any], inventory: list[Any], prune: bool) -> bool:
    """Whether ``expected`` is the digest of this content (constant-time comparison)."""
    return hmac.compare_digest(str(expected or ""), work_digest(objects, inventory, prune))
