from __future__ import annotations

import posixpath
import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from fleet.core import urlguard

_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")
# scp-like with a password in the user part: ``user:secret@host:path``
_SCP_WITH_PASSWORD = re.compile(r"^[^@/\s]*:[^@/\s]*@[^@/\s]+:")

CREDENTIALS_MESSAGE = (
    "Remove the password from the URL: Fleetgate stores credentials encrypted, not in URLs. Put an "
    "https token in the repository's token field (authentication method 'token', with its user name in "
    "'username'), or use an SSH key (authentication method 'ssh', fields ssh_private_key and "
    "ssh_known_hosts)."
)


def url_has_password(value: str) -> bool:
    """Does a repository URL carry a password (``scheme://user:secret@host``, ``user:secret@host:path``)?
    A user name alone (``https://git@host/x``, ``git@host:org/x``) is not a password."""
    if "://" not in value:
        return bool(_SCP_WITH_PASSWORD.match(value))
    try:
        return urlsplit(value).password is not None
    except ValueError:
        return "@" in value.split("://", 1)[1].split("/", 1)[0]


def validate_repository_url(value: str) -> None:
    if url_has_password(value):
        raise ValidationError(CREDENTIALS_MESSAGE, code="credentials_in_url")
    if value != value.strip() or any(ord(c) < 32 or c == "\x7f" for c in value) or value.startswith("-"):
        raise ValidationError("The URL may not start with '-' or contain spaces or control characters.")
    if value.startswith("file://"):
        if not settings.FLEETGATE_ALLOW_FILE_REPOSITORIES:
            raise ValidationError("file:// repositories are disabled (FLEETGATE_ALLOW_FILE_REPOSITORIES).")
        return
    if not (value.startswith(("https://", "http://", "ssh://")) or _SCP_LIKE.match(value)):
        raise ValidationError("Use an https://, ssh://, git@host:path or file:// URL.")
    try:
        if "://" in value:
            urlsplit(value).port  # noqa: B018 - raises ValueError for a bad port
        urlguard.check_url(value, urlguard.deny_networks(), what="repository URL")
    except urlguard.URLRefused as exc:
        raise ValidationError(str(exc), code="denied_address") from None
    except ValueError:
        raise ValidationError("The URL is not valid (check the host and port).") from None


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
    if any(part == ".git" for part in value.split("/")):
        raise ValidationError("The path may not name .git: map files of the repository's tree.")
    normalized = posixpath.normpath(value)
    if normalized.startswith("../") or normalized == "..":
        raise ValidationError("The path must stay inside the repository.")


def validate_directory_glob(value: str) -> None:
    """An Argo CD directory include/exclude glob (``{a.yaml,b/*.yaml}``), checked as rendering reads it."""
    from fleet.sources.render.errors import RenderError
    from fleet.sources.render.plain import validate_glob

    if value != value.strip():
        raise ValidationError("The glob may not start or end with white space.")
    try:
        validate_glob(value)
    except RenderError as exc:
        raise ValidationError(exc.message) from None


def _glob_json_schema() -> dict[str, str]:
    from fleet.sources.render.plain import GLOB_SCHEMA_PATTERN

    return {"pattern": GLOB_SCHEMA_PATTERN}


# The API schema's pattern for the glob (fleet/core/api/schema.py publishes a validator's json_schema).
validate_directory_glob.json_schema = _glob_json_schema()  # type: ignore[attr-defined]


# Helm's own rule for release names (``helm_python.validate_release_name`` checks it again at render time); a
# RegexValidator, so that the API schema documents the pattern.
validate_release_name = RegexValidator(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    "A Helm release name: lower-case letters, digits, '-' and '.', starting and ending with a letter or "
    "digit, at most 53 characters.",
    code="release_name",
)


def validate_chart_repository_url(value: str) -> None:
    """A chart repository's URL: ``https://`` (an index repository or archive URLs under it) or ``oci://``
    (a registry host and optional path), without credentials, outside the denied networks."""
    from fleet.sources.charts.spec import redact

    if value != value.strip() or any(ord(c) < 33 or c == "\x7f" for c in value):
        raise ValidationError("The URL may not contain spaces or control characters.")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValidationError("The URL is not valid (check the host and port).") from None
    if parts.scheme not in ("https", "http", "oci") or not parts.hostname:
        raise ValidationError("Use an https:// (chart repository) or oci:// (registry) URL.")
    if parts.username or parts.password:
        raise ValidationError("Put the user name and password in their own fields, not in the URL.",
                              code="credentials_in_url")
    if parts.query or parts.fragment:
        raise ValidationError(f"The URL may not have a query or fragment ({redact(value)}).")
    try:
        urlguard.check_url(value.replace("oci://", "https://", 1), urlguard.deny_networks(),
                           what="chart repository URL")
    except urlguard.URLRefused as exc:
        raise ValidationError(str(exc), code="denied_address") from None


def validate_helm_repo(value: str) -> None:
    """A mapping's chart repository: an ``https://`` index repository or an ``oci://`` registry path, checked
    as a stored chart repository's URL is (no credentials, no query, outside the denied networks)."""
    if value:
        validate_chart_repository_url(value)


def validate_helm_version(value: str) -> None:
    """An exact chart version or a constraint Helm reads (``1.2.3``, ``^1.2``, ``>= 1.0, < 2.0``, ``1.x``)."""
    from fleet.sources.charts.versions import select

    if value != value.strip() or any(ord(c) < 32 or c == "\x7f" for c in value):
        raise ValidationError("The version may not start or end with white space or hold control characters.")
    try:
        select(value, [])
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


CHART_FILE_PREFIX = "chart:"


def validate_values_files(value: object) -> None:
    """A mapping's Helm values files: a list of file paths relative to the repository root (checked as
    ``path`` is, and no glob), or ``chart:<path>`` for a file inside the chart itself (a chart from a
    repository or registry, as Argo CD's and Flux's valuesFiles of such charts name them)."""
    if not isinstance(value, list):
        raise ValidationError("A list of file paths.")
    if len(value) > 20:
        raise ValidationError("At most 20 values files.")
    seen: set[str] = set()
    for entry in value:
        if not isinstance(entry, str) or not entry.strip():
            raise ValidationError("Each values file is a non-empty path.")
        path = entry[len(CHART_FILE_PREFIX):] if entry.startswith(CHART_FILE_PREFIX) else entry
        if len(entry) > 500:
            raise ValidationError(f"{entry[:40]!r}...: at most 500 characters.")
        if any(c in path for c in "*?[{"):
            raise ValidationError(f"{entry!r}: a values file is one file, not a glob.")
        if path in (".", "") or path.endswith("/"):
            raise ValidationError(f"{entry!r}: name a file, not a directory.")
        if "://" in path or path.startswith("$"):
            raise ValidationError(f"{entry!r}: a file of the repository (or chart:<file> of the chart), "
                                  "not a URL or a reference.")
        try:
            validate_repo_path(path)
        except ValidationError as exc:
            raise ValidationError(f"{entry!r}: {' '.join(exc.messages)}") from None
        if entry in seen:
            raise ValidationError(f"{entry!r} is listed twice.")
        seen.add(entry)


def validate_helm_chart(value: str) -> None:
    """A mapping's chart from outside the repository: a chart name, an ``oci://`` reference or an https://
    URL of a .tgz (the repository URL, if any, is checked with the mapping: ``PathMapping.check_chart``)."""
    if not value:
        return
    if value != value.strip() or any(ord(c) < 33 or c == "\x7f" for c in value):
        raise ValidationError("The chart may not contain spaces or control characters.")
    if "://" in value:
        validate_chart_repository_url(value)


def validate_namespace_labels(value: object) -> None:
    """Labels of a namespace a mapping creates: Kubernetes label keys and values."""
    from clusters.selectors import validate_labels

    validate_labels(value)


def validate_namespace_annotations(value: object) -> None:
    """Annotations of a namespace a mapping creates: label-like keys, string values (256 KiB in all, as the
    API server allows)."""
    from clusters.selectors import LABEL_KEY

    if not isinstance(value, dict):
        raise ValidationError("Annotations must be an object of string keys to string values.")
    size = 0
    for key, text in value.items():
        if not isinstance(key, str) or len(key) > 316 or not LABEL_KEY.match(key):
            raise ValidationError(f"invalid annotation key {key!r}")
        if not isinstance(text, str):
            raise ValidationError(f"the value of annotation {key!r} must be a string")
        size += len(key) + len(text.encode())
    if size > 256 * 1024:
        raise ValidationError("annotations may total at most 256 KiB")


def _namespace_metadata_schemas() -> tuple[dict[str, object], dict[str, object]]:
    from clusters.selectors import LABEL_KEY, LABELS_SCHEMA

    annotations: dict[str, object] = {
        "type": "object",
        "propertyNames": {"type": "string", "maxLength": 316, "pattern": LABEL_KEY.pattern},
        "additionalProperties": {"type": "string"},
    }
    return dict(LABELS_SCHEMA), annotations


# The API schema publishes what these validators accept (fleet/core/api/schema.py reads json_schema).
_LABELS_SCHEMA, _ANNOTATIONS_SCHEMA = _namespace_metadata_schemas()
validate_namespace_labels.json_schema = _LABELS_SCHEMA  # type: ignore[attr-defined]
validate_namespace_annotations.json_schema = _ANNOTATIONS_SCHEMA  # type: ignore[attr-defined]
