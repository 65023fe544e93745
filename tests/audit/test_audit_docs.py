"""docs/roles.md's role table is the content of ROLE_PERMISSIONS, so the docs cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from fleet.access.choices import Role
from fleet.access.roles import ROLE_PERMISSIONS

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
