"""Admin base classes: writes are audited; secret fields are write-only.

A secret (every field with ``is_secret``, i.e. ``EncryptedTextField``) is never rendered by the admin: an
editor gets an empty password input that says whether a value is stored (blank keeps it, a value replaces
it), and a staff user who may only view gets "set" / "not set" in its place. No ``initial-<field>`` hidden
input carries it either: a secret with a callable default (a repository's webhook secret) is generated when
the object is added with the field left blank.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.utils.text import capfirst

from fleet.audit.redact import snapshot
from fleet.audit.services import record_change
from fleet.core.choices import ChangeContext
from fleet.core.context import acting
from fleet.core.fields import secret_field_names

STATE_SUFFIX = "_state"


class SecretInput(forms.PasswordInput):
    def __init__(self) -> None:
        super().__init__(render_value=False, attrs={"autocomplete": "new-password", "placeholder": "not set"})


def secret_formfield(db_field: Any) -> forms.CharField:
    """A password input that never renders a value and has no hidden initial (whatever the default)."""
    return forms.CharField(
        label=capfirst(db_field.verbose_name),
        help_text=db_field.help_text,
        required=False,
        strip=False,
        widget=SecretInput(),
    )


class SecretFieldsForm(forms.ModelForm):
    """Secret fields render empty: blank keeps the stored value (or, when adding, takes the field's
    default, e.g. a generated webhook secret); a value replaces it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in secret_field_names(self._meta.model):
            self.initial.pop(name, None)
            if name not in self.fields:
                continue
            field = self.fields[name]
            if not isinstance(field.widget, SecretInput):
                self.fields[name] = field = secret_formfield(self._meta.model._meta.get_field(name))
            if self.instance.pk and getattr(self.instance, name):
                field.widget.attrs["placeholder"] = "set: leave empty to keep it"
                field.help_text = f"{field.help_text} A value is set; type a new one to replace it.".strip()
            else:
                field.help_text = f"{field.help_text} Not set.".strip()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name in secret_field_names(self._meta.model):
            if name not in cleaned or cleaned[name]:
                continue
            if self.instance.pk:
                cleaned[name] = getattr(self.instance, name)
            else:
                model_field = self._meta.model._meta.get_field(name)
                cleaned[name] = model_field.get_default() if model_field.has_default() else ""
            setattr(self.instance, name, cleaned[name])
        return cleaned


def _secret_state(name: str, label: str) -> Any:
    def state(obj: Any) -> str:
        return "set" if obj is not None and bool(getattr(obj, name, "")) else "not set"

    state.short_description = label  # type: ignore[attr-defined]
    return state


class AuditedModelAdmin(admin.ModelAdmin):
    """Audits every write; secret fields are write-only (see the module docstring)."""

    form = SecretFieldsForm

    def __init__(self, model: Any, admin_site: Any) -> None:
        super().__init__(model, admin_site)
        self._secrets = secret_field_names(model)
        for name in self._secrets:
            label = capfirst(model._meta.get_field(name).verbose_name)
            setattr(self, name + STATE_SUFFIX, _secret_state(name, label))

    def _masked(self, names: Any) -> list[Any]:
        """Names with every secret replaced by its "set"/"not set" stand-in (no duplicates)."""
        out: list[Any] = []
        for name in names:
            item = name + STATE_SUFFIX if isinstance(name, str) and name in self._secrets else name
            if item not in out:
                out.append(item)
        return out

    def formfield_for_dbfield(self, db_field: Any, request: Any, **kwargs: Any) -> Any:
        if getattr(db_field, "is_secret", False):
            return secret_formfield(db_field)
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_readonly_fields(self, request: Any, obj: Any = None) -> Any:
        return self._masked(super().get_readonly_fields(request, obj))

    def get_list_display(self, request: Any) -> Any:
        return self._masked(super().get_list_display(request))

    def get_fieldsets(self, request: Any, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        view_only = obj is not None and not self.has_change_permission(request, obj)
        if not view_only:
            return fieldsets
        # Every field is shown read-only: a secret is shown as "set" / "not set", never as its value.
        masked = []
        for title, options in fieldsets:
            fields = [
                self._masked(line) if isinstance(line, list | tuple) else self._masked([line])[0]
                for line in options.get("fields", ())
            ]
            masked.append((title, {**options, "fields": fields}))
        return masked

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


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """Rows that change only through their services (which check scope and audit): the admin shows them and
    neither adds, changes nor deletes any."""

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False
