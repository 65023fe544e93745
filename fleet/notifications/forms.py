from __future__ import annotations

from typing import Any

from django import forms

from clusters.models import ClusterGroup
from fleet.access.restrict import restrict
from fleet.notifications.choices import Channel, EventType
from fleet.sources.models import PathMapping, Repository


class SubscriptionForm(forms.Form):
    """A new subscription; the choices of group, mapping and repository are what the user may see."""

    name = forms.CharField(max_length=100)
    events = forms.MultipleChoiceField(choices=EventType.choices, widget=forms.CheckboxSelectMultiple)
    cluster_group = forms.ModelChoiceField(queryset=ClusterGroup.objects.none(), required=False)
    mapping = forms.ModelChoiceField(queryset=PathMapping.objects.none(), required=False)
    repository = forms.ModelChoiceField(queryset=Repository.objects.none(), required=False)
    channel = forms.ChoiceField(choices=Channel.choices)
    target = forms.CharField(
        max_length=2000, help_text="Webhook URL, or email addresses separated by commas. Not shown again."
    )

    def __init__(self, user: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["cluster_group"].queryset = restrict(ClusterGroup.objects.order_by("name"), user)  # type: ignore[attr-defined]
        self.fields["mapping"].queryset = restrict(  # type: ignore[attr-defined]
            PathMapping.objects.select_related("repository").order_by("repository__name", "name"), user
        )
        self.fields["repository"].queryset = restrict(Repository.objects.order_by("name"), user)  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        chosen = [k for k in ("cluster_group", "mapping", "repository") if data.get(k)]
        if len(chosen) != 1:
            raise forms.ValidationError("Choose exactly one cluster group, mapping or repository.")
        return data
