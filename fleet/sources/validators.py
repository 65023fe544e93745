from __future__ import annotations

import posixpath
import re

from django.conf import settings
from django.core.exceptions import ValidationError

_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")


def validate_repository_url(value: str) -> None:
    if value.startswith(("https://", "http://", "ssh://")) or _SCP_LIKE.match(value):
        return
    if value.startswith("file://"):
        if not settings.FLEETGATE_ALLOW_FILE_REPOSITORIES:
            raise ValidationError("file:// repositories are disabled (FLEETGATE_ALLOW_FILE_REPOSITORIES).")
        return
    raise ValidationError("Use an https://, ssh://, git@host:path or file:// URL.")


def validate_repo_path(value: str) -> None:
    """A path (or glob) inside the repository: relative, and never escaping it."""
    if not value:
        raise ValidationError("The path may not be empty; use '.' for the repository root.")
    if "\x00" in value or "\\" in value:
        raise ValidationError("The path may not contain NUL bytes or backslashes.")
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise ValidationError("The path must be relative to the repository root.")
    if any(part == ".." for part in value.split("/")):
        raise ValidationError("The path may not contain '..': it must stay inside the repository.")
    normalized = posixpath.normpath(value)
    if normalized.startswith("../") or normalized == "..":
        raise ValidationError("The path must stay inside the repository.")
