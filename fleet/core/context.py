"""Who is acting, from where, in which request: carried through web requests, commands and Celery tasks.

The audit log reads this context so that a service records an event in one line without passing the
request around. NetBox keeps the same idea in `netbox/context.py`.
"""

from __future__ import annotations

import contextlib
import contextvars
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from fleet.core.choices import ChangeContext


@dataclass(frozen=True)
class ActionContext:
    request_id: str
    change_context: str = ChangeContext.COMMAND
    user: Any = None  # a django User, or None for the system
    source_address: str = ""
    # Who is at the shell when there is no Fleetgate user (manage.py commands): "login@host".
    operator: str = ""


_current: contextvars.ContextVar[ActionContext | None] = contextvars.ContextVar("fleet_action", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def current() -> ActionContext:
    ctx = _current.get()
    if ctx is None:
        ctx = ActionContext(request_id=new_request_id())
        _current.set(ctx)
    return ctx


@contextlib.contextmanager
def acting(
    *,
    user: Any = None,
    change_context: str | None = None,
    request_id: str | None = None,
    source_address: str | None = None,
    operator: str | None = None,
) -> Iterator[ActionContext]:
    """Run a block as `user` in `change_context`; values not given are inherited from the outer context."""
    outer = _current.get()
    base = outer or ActionContext(request_id=request_id or new_request_id())
    ctx = replace(
        base,
        user=user if user is not None else base.user,
        change_context=change_context or base.change_context,
        request_id=request_id or base.request_id,
        source_address=source_address if source_address is not None else base.source_address,
        operator=operator if operator is not None else base.operator,
    )
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def set_user(user: Any) -> None:
    """Attach the authenticated user to the current request's context (DRF authenticates late)."""
    ctx = current()
    _current.set(replace(ctx, user=user))


def set_actor(user: Any, operator: str) -> None:
    """Act as ``operator`` without a Fleetgate user for the rest of the request (a pull-mode cluster's
    agent: ``agent:<cluster>``), replacing whoever the middleware found (a session is not the agent)."""
    ctx = current()
    _current.set(replace(ctx, user=user, operator=operator))
