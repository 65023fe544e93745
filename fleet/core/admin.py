"""Admin base classes: writes are audited; secret fields are write-only password inputs."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction

from fleet.audit.redact import snapshot
from fleet.audit.services import record_change
from fleet.core.choices import ChangeContext
from fleet.core.context import acting
from fleet.core.fields import secret_field_names


class SecretInput(forms.PasswordInput):
    def __init__(self) -> None:
        super().__init__(
            render_value=False, attrs={"autocomplete": "new-password", "placeholder": "unchanged"}
        )


class SecretFieldsForm(forms.ModelForm):
    """Secret fields show empty and keep the stored value when left empty."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in secret_field_names(self._meta.model):
            if name in self.fields:
                self.fields[name].widget = SecretInput()
                self.fields[name].required = False

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.instance.pk:
            for name in secret_field_names(self._meta.model):
                if name in cleaned and not cleaned[name]:
                    cleaned[name] = getattr(self.instance, name)
                    setattr(self.instance, name, cleaned[name])
        return cleaned


class AuditedModelAdmin(admin.ModelAdmin):
    form = SecretFieldsForm

    def _action(self, obj: Any, verb: str) -> str:
        return f"{obj._meta.model_name}.{verb}"

    def save_model(self, request: Any, obj: Any, form: Any, change: bool) -> None:
        with acting(user=request.user, change_context=ChangeContext.WEB):
            before = None
            if change:
                before = snapshot(type(obj).objects.get(pk=obj.pk))
            request._fleet_audit = (before, change)
            super().save_model(request, obj, form, change)

    def save_related(self, request: Any, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        before, change = getattr(request, "_fleet_audit", (None, change))
        with acting(user=request.user, change_context=ChangeContext.WEB), transaction.atomic():
            record_change(
                self._action(form.instance, "update" if change else "create"), form.instance, before
            )

    def delete_model(self, request: Any, obj: Any) -> None:
        with acting(user=request.user, change_context=ChangeContext.WEB), transaction.atomic():
            record_change(self._action(obj, "delete"), obj, snapshot(obj))
            super().delete_model(request, obj)

    def delete_queryset(self, request: Any, queryset: Any) -> None:
        for obj in queryset:
            self.delete_model(request, obj)
