"""Carry the request id and actor into Celery tasks through task headers, and back into the context."""

from __future__ import annotations

from typing import Any

from celery import signals

from fleet.core import context
from fleet.core.choices import ChangeContext

_tokens: dict[str, Any] = {}


@signals.before_task_publish.connect
def _add_headers(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None:
        return
    ctx = context._current.get()
    if ctx is None:
        return
    headers.setdefault("fleet_request_id", ctx.request_id)
    user = ctx.user
    if user is not None and getattr(user, "pk", None) is not None:
        headers.setdefault("fleet_actor_id", user.pk)


@signals.task_prerun.connect
def _enter_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    request_id = getattr(request, "fleet_request_id", None) if request else None
    actor_id = getattr(request, "fleet_actor_id", None) if request else None
    user = None
    if actor_id is not None:
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(pk=actor_id).first()
    manager = context.acting(
        user=user, change_context=ChangeContext.TASK, request_id=request_id or context.new_request_id()
    )
    manager.__enter__()
    if task_id:
        _tokens[task_id] = manager


@signals.task_postrun.connect
def _leave_context(task_id: str | None = None, **_: Any) -> None:
    manager = _tokens.pop(task_id or "", None)
    if manager is not None:
        manager.__exit__(None, None, None)
