"""clusters.agent.digest: the Work digest both Fleetgate and the agent compute (issue 18 contract)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from clusters.agent.digest import digest_matches, work_digest

ROOT = Path(__file__).resolve().parents[2]

OBJECTS = [
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "a", "namespace": "ns"},
        "data": {"k": "é"},
    },
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {},
    },
]
INVENTORY = [{"group": "", "version": "v1", "kind": "ConfigMap", "namespace": "ns", "name": "old"}]


def test_digest_is_sha256_of_the_contract_canonical_json() -> None:
    expected = hashlib.sha256(
        json.dumps(
            {"objects": OBJECTS, "inventory": INVENTORY, "prune": True}, sort_keys=True, separators=(",", ":")
        ).encode("utf-8")
    ).hexdigest()
    assert work_digest(OBJECTS, INVENTORY, True) == f"sha256:{expected}"


def test_digest_ignores_key_order_but_not_list_order_or_content() -> None:
    d = work_digest(OBJECTS, INVENTORY, True)
    reordered_keys = [dict(reversed(list(o.items()))) for o in OBJECTS]
    assert work_digest(reordered_keys, INVENTORY, True) == d
    assert work_digest(list(reversed(OBJECTS)), INVENTORY, True) != d
    assert work_digest(OBJECTS, INVENTORY, False) != d
    assert work_digest(OBJECTS, [], True) != d
    changed = json.loads(json.dumps(OBJECTS))
    changed[0]["data"]["k"] = "e"
    assert work_digest(changed, INVENTORY, True) != d


def test_digest_of_a_json_round_trip_is_unchanged() -> None:
    """What the agent receives is the JSON the server sent: the digest must survive the round trip."""
    wire = json.loads(json.dumps({"objects": OBJECTS, "inventory": INVENTORY, "prune": True}))
    assert work_digest(wire["objects"], wire["inventory"], wire["prune"]) == work_digest(
        OBJECTS, INVENTORY, True
    )
    assert digest_matches(work_digest(OBJECTS, INVENTORY, True), wire["objects"], wire["inventory"], True)
    assert not digest_matches("sha256:" + "0" * 64, OBJECTS, INVENTORY, True)
    assert not digest_matches("", OBJECTS, INVENTORY, True)


def test_digest_module_imports_nothing_from_django() -> None:
    code = (
        "import sys; import clusters.agent.digest; "
        "bad = [m for m in sys.modules if m == 'django' or m.startswith('django.')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env={"PATH": ""}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
