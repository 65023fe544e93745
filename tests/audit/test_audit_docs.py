"""The docs cannot drift from the code: docs/roles.md's role table is ROLE_PERMISSIONS, and the verifier
snippet in docs/audit.md verifies a real export."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from fleet.access.choices import Role
from fleet.access.roles import ROLE_PERMISSIONS
from fleet.audit.services import record, verify
from fleet.core.context import acting

_ORDER = ("view", "add", "change", "delete")


def roles_table() -> str:
    """The markdown table in docs/roles.md: one row per resource, one column per role."""
    resources = sorted({perm.split(".")[0] for perms in ROLE_PERMISSIONS.values() for perm in perms})

    def actions(role: Role, resource: str) -> str:
        found = [p.split(".", 1)[1] for p in ROLE_PERMISSIONS[role] if p.split(".", 1)[0] == resource]
        found.sort(key=lambda a: (_ORDER.index(a) if a in _ORDER else len(_ORDER), a))
        return ", ".join(found) or "–"

    lines = [
        "| resource | " + " | ".join(f"{role.label} (`{role.value}`)" for role in Role) + " |",
        "|---|" + "---|" * len(Role),
    ]
    lines += [f"| `{res}` | " + " | ".join(actions(role, res) for role in Role) + " |" for res in resources]
    return "\n".join(lines)


def test_roles_doc_table_matches_role_permissions() -> None:
    text = (Path(settings.BASE_DIR) / "docs" / "roles.md").read_text()
    start = text.index("<!-- roles-table")
    start = text.index("\n", start) + 1
    end = text.index("<!-- /roles-table -->")
    assert text[start:end].strip() == roles_table(), "update docs/roles.md with:\n" + roles_table()


@pytest.mark.django_db
def test_the_independent_verifier_in_docs_audit_md_checks_an_export(
    admin_client: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    text = (Path(settings.BASE_DIR) / "docs" / "audit.md").read_text()
    start = text.index("```python", text.index("re-implement independently")) + len("```python")
    snippet = text[start : text.index("```", start)]
    with acting(change_context="command"):
        for i in range(3):
            record("test.doc", target_type="thing", after={"i": i, "name": "ünïcode"}, message=f"event {i}")
    body = b"".join(admin_client.get("/api/audit/events/export/", {"format": "jsonl"}).streaming_content)
    (tmp_path / "audit.jsonl").write_bytes(body)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, "docs/audit.md", "exec"), {})  # noqa: S102 (our own documentation)
    assert out.getvalue().strip() == f"OK, head {verify().head_hash}"
    lines = body.decode().splitlines()
    tampered = json.loads(lines[1])
    tampered["message"] = "changed"
    (tmp_path / "audit.jsonl").write_text("\n".join([lines[0], json.dumps(tampered), lines[2]]) + "\n")
    with pytest.raises(AssertionError, match="bad #2"):
        exec(compile(snippet, "docs/audit.md", "exec"), {})  # noqa: S102
