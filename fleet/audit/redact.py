"""Turning model instances into audit snapshots with every secret removed."""

from __future__ import annotations

import re
from typing import Any

from django.db import models

from fleet.core.fields import secret_field_names

REDACTED = "<redacted>"
_SECRET_KEY = re.compile(
    r"(token|password|passwd|secret|private[_-]?key|client[_-]?key|kubeconfig|credential)", re.I
)
# ``scheme://user:password@host``: the password (up to the last ``@`` of the authority) is removed
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^\s/]*@")


def redact_url_passwords(text: str) -> str:
    """``https://user:secret@host/x`` -> ``https://user:<redacted>@host/x`` anywhere in ``text``."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{REDACTED}@", text) if "@" in text else text


def redact(value: Any) -> Any:
    """Replace the values of secret-looking keys, at any depth, and passwords in URLs in any string."""
    if isinstance(value, str):
        return redact_url_passwords(value)
    if isinstance(value, dict):
        return {
            key: (REDACTED if isinstance(key, str) and _SECRET_KEY.search(key) and item else redact(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def snapshot(instance: models.Model) -> dict[str, Any]:
    """The instance's fields as JSON-able data; encrypted fields only say whether they are set."""
    secrets = secret_field_names(type(instance))
    data: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        value = getattr(instance, field.attname)
        if field.name in secrets:
            data[field.name] = REDACTED if value else ""
        elif isinstance(value, (str, int, float, bool, list, dict)) or value is None:
            data[field.name] = value
        else:
            data[field.name] = str(value)
    if instance.pk is not None:
        for field in instance._meta.many_to_many:
            if field.editable:
                data[field.name] = sorted(getattr(instance, field.name).values_list("pk", flat=True))
    return redact(data)
