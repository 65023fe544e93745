"""Model fields for secrets."""

from __future__ import annotations

from typing import Any

from django.db import models

from fleet.core import crypto

_PREFIX = "fernet:"


class EncryptedTextField(models.TextField):
    """A text field stored encrypted; Python code sees the plaintext.

    The database holds `fernet:<token>`; empty strings stay empty. Secrets are never shown by serializers
    (they are write-only there) and the audit log redacts every field of this type.
    """

    is_secret = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blank", True)
        kwargs.setdefault("default", "")
        super().__init__(*args, **kwargs)

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str:
        if not value:
            return ""
        if value.startswith(_PREFIX):
            return crypto.decrypt(value[len(_PREFIX) :])
        return value

    def get_prep_value(self, value: Any) -> str:
        value = super().get_prep_value(value)
        if not value:
            return ""
        return _PREFIX + crypto.encrypt(str(value))


def secret_field_names(model: type[models.Model]) -> set[str]:
    return {f.name for f in model._meta.concrete_fields if getattr(f, "is_secret", False)}
