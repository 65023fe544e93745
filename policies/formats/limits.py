"""Evaluation limits of the in-process policy languages (ValidatingAdmissionPolicy CEL, Kyverno).

Rego runs in worker processes that are killed past ``FLEETGATE_REGO_TIMEOUT`` seconds per evaluation; VAP
and Kyverno policies run in this process, so they are bounded from the inside:

- **cost**: every CEL evaluation has a budget of :data:`PER_CALL_COST_LIMIT` units, as Kubernetes' runtime
  cost limit per expression (``PerCallLimit``): each iteration of a comprehension (``all``, ``exists``,
  ``exists_one``, ``map``, ``filter``) costs the size of its body (one unit per token), so nested
  comprehensions over large lists run out long before they run long. Over the budget the evaluation fails
  with Kubernetes' error, ``operation cancelled: actual cost limit exceeded``, which is an evaluation error
  like any other (VAP ``failurePolicy``, Kyverno's rule error).
- **time**: each CEL evaluation stops at ``FLEETGATE_REGO_TIMEOUT`` seconds (the bound a Rego evaluation
  of one object has), checked at every comprehension iteration; within :func:`time_limit` (the gate sets
  it from its time budget) everything also stops at that ``end``, checked inside comprehensions too and at
  each Kyverno JMESPath query and pattern. Past either, :class:`EvaluationTimeout` is raised, an engine
  timeout: the gate blocks whatever the policy's failurePolicy says (fail closed, as for Rego).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache

from policies.engine.base import EngineTimeout

__all__ = ["PER_CALL_COST_LIMIT", "EvaluationTimeout", "check_time", "evaluation_end", "time_limit"]

#: Kubernetes' ``celconfig.PerCallLimit``: the runtime cost one CEL expression evaluation may spend.
PER_CALL_COST_LIMIT = 1_000_000

#: The monotonic time every evaluation stops (the gate's time budget), None: no overall limit.
_END: ContextVar[float | None] = ContextVar("policy_evaluation_end", default=None)


class EvaluationTimeout(EngineTimeout):
    """A VAP or Kyverno evaluation ran past its time limit (the gate blocks)."""


@contextmanager
def time_limit(end: float | None) -> Iterator[None]:
    """Stop every evaluation inside at the monotonic time ``end`` (None: only the per-evaluation limit)."""
    token = _END.set(end)
    try:
        yield
    finally:
        _END.reset(token)


def evaluation_seconds() -> float:
    """Seconds one CEL evaluation may take: ``FLEETGATE_REGO_TIMEOUT``, the limit of one Rego evaluation."""
    try:
        from django.conf import settings

        raw = getattr(settings, "FLEETGATE_REGO_TIMEOUT", None)
    except Exception:  # Django not configured (a script): the engines' default
        raw = None
    return _seconds(raw if isinstance(raw, str | int | float) else None)


@lru_cache(maxsize=16)
def _seconds(raw: str | float | None) -> float:
    from policies.engine import EngineSettings, parse_engine_settings

    try:
        return parse_engine_settings(timeout=raw).timeout
    except ValueError:  # the Rego engine reports the bad setting; CEL keeps the default meanwhile
        return EngineSettings().timeout


def evaluation_end() -> tuple[float, str]:
    """The monotonic time an evaluation starting now must stop, and what that limit is (for the message)."""
    seconds = evaluation_seconds()
    own = time.monotonic() + seconds
    end = _END.get()
    if end is not None and end < own:
        return end, "the policy evaluation's time budget"
    return own, f"the {seconds:g}s limit of one evaluation (FLEETGATE_REGO_TIMEOUT)"


def check_time() -> None:
    """Raise :class:`EvaluationTimeout` when the overall end (the gate's time budget) has passed."""
    end = _END.get()
    if end is not None and time.monotonic() >= end:
        raise EvaluationTimeout("policy evaluation stopped: it exceeded the policy evaluation's time budget")
