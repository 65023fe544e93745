"""A domain error's kind decides its answer (one mapping for the API, one for the UI), never its message; the
one audited save re-checks scope after saving and rolls back the save and its audit row on refusal."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages.storage.fallback import FallbackStorage
from django.http import HttpResponse
from django.test import RequestFactory
from rest_framework.exceptions import PermissionDenied, ValidationError

from clusters.models import ClusterGroup
from fleet.access.restrict import EVERYWHERE, NOWHERE, Scope
from fleet.access.writes import OutOfScope, save_in_scope
from fleet.audit.models import AuditEvent
from fleet.core.api.exceptions import Conflict, api_error
from fleet.core.errors import DomainError, ErrorKind
from fleet.rollouts.services import RolloutError
from fleet.web.views.base import refused


def test_api_answers_by_kind_whatever_the_message() -> None:
    forbidden = DomainError("no", kind=ErrorKind.FORBIDDEN, field="cluster")
    assert isinstance(api_error(forbidden), PermissionDenied)
    assert isinstance(api_error(RolloutError("may not, but busy", conflict=True)), Conflict)
    invalid = api_error(RolloutError("you may not pass a date", field="commit"))
    assert isinstance(invalid, ValidationError) and invalid.detail == {"commit": ["you may not pass a date"]}
    plain = api_error(DomainError("cannot approve"))
    assert isinstance(plain, ValidationError) and "non_field_errors" in plain.detail  # type: ignore[operator]


def test_ui_answers_by_kind() -> None:
    request = RequestFactory().post("/")
    request.session = {}  # type: ignore[attr-defined]
    request._messages = FallbackStorage(request)  # type: ignore[attr-defined]
    back = HttpResponse("back")
    assert refused(request, RolloutError("x", kind=ErrorKind.FORBIDDEN), back).status_code == 403
    assert refused(request, RolloutError("you may not, it is paused", conflict=True), back) is back


def test_scope_covers() -> None:
    assert EVERYWHERE.covers(None) and EVERYWHERE.covers(3)
    assert Scope(False, frozenset({3})).covers(3)
    assert not Scope(False, frozenset({3})).covers(4) and not Scope(False, frozenset({3})).covers(None)
    assert not NOWHERE.covers(3)


@pytest.mark.django_db
def test_save_in_scope_rolls_back_an_out_of_scope_save(make_user: Any) -> None:
    mine = ClusterGroup.objects.create(name="mine")
    user = make_user("scoped", role="cluster-admin", scope=mine)
    events = AuditEvent.objects.count()

    def save() -> ClusterGroup:
        return ClusterGroup.objects.create(name="elsewhere")

    with pytest.raises(OutOfScope):
        save_in_scope(user, save, before=None)
    assert not ClusterGroup.objects.filter(name="elsewhere").exists()
    assert AuditEvent.objects.count() == events

    def rename() -> ClusterGroup:
        mine.description = "changed"
        mine.save()
        return mine

    save_in_scope(user, rename, before={"description": ""})
    assert AuditEvent.objects.filter(action="clustergroup.update").count() == 1
