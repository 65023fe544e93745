"""In-process Rego with regorus (PyPI ``gordon-to-regorus``, import name ``regorus``).

Facts this module is built around (see shared/reference/policy-formats.md):

* an ``regorus.Engine`` may only be used from the thread that created it (otherwise a
  ``PanicException``, which is a BaseException); so prepared engines live in a per-thread cache keyed
  by the policy set's digest, and a prepared set transparently builds its engine again in a new thread;
* with ``RUST_BACKTRACE`` set, every error captures a backtrace (40x slower and noisy messages), so the
  variable is removed from the process environment before the first engine is built;
* engines run in v0 mode; v1 modules get ``import rego.v1`` on their package line
  (:func:`policies.engine.source.normalise_for_engine`), which switches them to v1 in that mode;
* there is no way to interrupt an evaluation: the timeout is checked after each evaluation and an
  evaluation that overran raises :class:`EngineTimeout` (a hard limit belongs to the worker process,
  e.g. the Celery task's ``time_limit``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from policies.engine.base import (
    CompileError,
    EngineError,
    EngineTimeout,
    Module,
    PolicyCompileError,
    PolicyEvaluationError,
    PolicySet,
    TestResult,
    check_target_data,
    entry_module_source,
    entry_package,
    run_tests_generic,
    to_json,
)
from policies.engine.source import module_version, normalise_for_engine, split_multi_body_rules


def _scrub_backtrace_env() -> None:
    for var in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE"):
        os.environ.pop(var, None)


_scrub_backtrace_env()

import regorus  # noqa: E402 - must come after the environment is cleaned

ENTRY_PATH = "__fleetgate_entry__.rego"
_LOCATION = re.compile(r"-->\s*(?P<file>.+?):(?P<line>\d+):(?P<col>\d+)")
_MESSAGE = re.compile(r"^error:\s*(?P<msg>.*)$", re.MULTILINE)
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)


def parse_regorus_error(text: str, default_path: str = "", code: str = "rego_compile_error") -> CompileError:
    """Turn regorus' rustc-style message (``--> file:line:col`` ... ``error: msg``) into a CompileError."""
    text = text.split("\nStack backtrace:", 1)[0]
    loc = _LOCATION.search(text)
    msgs = _MESSAGE.findall(text)
    message = msgs[0].strip() if msgs else text.strip()
    if loc:
        return CompileError(loc.group("file"), int(loc.group("line")), int(loc.group("col")), message, code)
    return CompileError(default_path, 0, 0, message, code)


def regorus_source(module: Module) -> str:
    """The module as regorus gets it: v1 modules with ``import rego.v1``; v0 rules with several bodies
    split into one rule per body (regorus rejects them; OPA accepts both forms). Lines do not move."""
    if module_version(module) == "v0":
        return split_multi_body_rules(module.source)
    return normalise_for_engine(module)


def _short(exc: BaseException) -> str:
    err = parse_regorus_error(str(exc))
    return str(err) if err.line else err.message


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.engines: OrderedDict[str, Any] = OrderedDict()


class RegorusSession:
    """Per-target data; engines with that data are cloned lazily per thread and policy set."""

    def __init__(self, target_data: Mapping[str, Any] | None) -> None:
        data = check_target_data(target_data)
        self.inventory_json = to_json({"inventory": data["inventory"]})
        self.fleetgate_json = to_json({"fleetgate": data["fleetgate"]})
        self._local = _ThreadState()

    def engine_for(self, prepared: RegorusPreparedSet) -> Any:
        digest = prepared.policy_set.digest
        engine = self._local.engines.get(digest)
        if engine is None:
            base = prepared._engine()
            if not (prepared.uses_inventory or prepared.uses_fleetgate):
                return base
            engine = base.clone()
            try:
                if prepared.uses_inventory:
                    engine.add_data_json(self.inventory_json)
                if prepared.uses_fleetgate:
                    engine.add_data_json(self.fleetgate_json)
            except BaseException as exc:
                if isinstance(exc, _PASS_THROUGH):
                    raise
                raise EngineError(
                    f"regorus: could not load target data: {_short(exc)}", engine="regorus"
                ) from exc
            self._local.engines[digest] = engine
        return engine

    def close(self) -> None:
        self._local = _ThreadState()

    def __enter__(self) -> RegorusSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RegorusPreparedSet:
    def __init__(self, engine: RegorusEngine, policy_set: PolicySet) -> None:
        self._owner = engine
        self.policy_set = policy_set
        self.entry_package = entry_package(policy_set)
        # Only clone and load per-target documents into sets that can read them.
        self.uses_inventory = policy_set.reads_inventory
        self.uses_fleetgate = policy_set.reads_context
        self._empty_session: RegorusSession | None = None

    def _engine(self) -> Any:
        return self._owner._engine_for(self.policy_set)

    def _session_engine(self, session: Any) -> Any:
        if session is None:
            return self._engine()
        if not isinstance(session, RegorusSession):
            raise TypeError("a regorus prepared set needs a session opened by the regorus engine")
        return session.engine_for(self)

    def _eval(self, engine: Any, rule: str, input_json: str) -> list[Any]:
        started = time.monotonic()
        try:
            engine.set_input_json(input_json)
            out = engine.eval_rule_as_json(rule)
        except BaseException as exc:
            if isinstance(exc, _PASS_THROUGH):
                raise
            raise PolicyEvaluationError(f"regorus: {_short(exc)}", engine="regorus") from exc
        elapsed = time.monotonic() - started
        if elapsed > self._owner.timeout:
            raise EngineTimeout(
                f"regorus: evaluation took {elapsed:.2f}s, over the {self._owner.timeout:g}s limit",
                engine="regorus",
            )
        value = json.loads(out)
        return value if isinstance(value, list) else []

    def _rule(self, entrypoint: str) -> str:
        if entrypoint not in self.policy_set.entrypoints:
            raise KeyError(f"unknown entry point {entrypoint!r}")
        return f"data.{self.entry_package}.ep_{entrypoint}"

    def evaluate(self, entrypoint: str, input: Any, session: Any = None) -> list[Any]:
        return self._eval(self._session_engine(session), self._rule(entrypoint), to_json(input))

    def evaluate_many(
        self, entrypoint: str, inputs_json: Sequence[str], session: Any = None
    ) -> list[list[Any]]:
        engine = self._session_engine(session)
        rule = self._rule(entrypoint)
        return [self._eval(engine, rule, text) for text in inputs_json]

    def query(self, query: str, input: Any = None, session: Any = None) -> list[Any]:
        engine = self._session_engine(session)
        try:
            engine.set_input_json(to_json(input))
            out = json.loads(engine.eval_query_as_json(f"[y | y := ({query})]"))
        except BaseException as exc:
            if isinstance(exc, _PASS_THROUGH):
                raise
            raise PolicyEvaluationError(f"regorus: {_short(exc)}", engine="regorus") from exc
        rows = out.get("result") or []
        return rows[0]["expressions"][0]["value"] if rows else []


class RegorusEngine:
    """The embedded engine. Safe to share between threads; each thread builds its own regorus engines."""

    name = "regorus"

    def __init__(self, *, timeout: float = 10.0, cache_size: int = 256) -> None:
        _scrub_backtrace_env()
        self.timeout = timeout
        self.cache_size = cache_size
        self._local = _ThreadState()

    # -- building
    def _build(self, policy_set: PolicySet) -> Any:
        engine = regorus.Engine()
        engine.set_rego_v0(True)
        errors: list[CompileError] = []
        for module in policy_set.modules:
            try:
                engine.add_policy(module.path, regorus_source(module))
            except BaseException as exc:
                if isinstance(exc, _PASS_THROUGH):
                    raise
                errors.append(parse_regorus_error(str(exc), module.path, "rego_parse_error"))
        if errors:
            raise PolicyCompileError(errors, engine=self.name)
        try:
            engine.add_policy(ENTRY_PATH, entry_module_source(policy_set, entry_package(policy_set)))
            if policy_set.data:
                engine.add_data_json(to_json(dict(policy_set.data)))
            engine.eval_query_as_json("1")  # forces the compile step (unsafe variables, conflicts, ...)
        except BaseException as exc:
            if isinstance(exc, _PASS_THROUGH):
                raise
            raise PolicyCompileError([parse_regorus_error(str(exc))], engine=self.name) from exc
        return engine

    def _engine_for(self, policy_set: PolicySet) -> Any:
        cache = self._local.engines
        digest = policy_set.digest
        engine = cache.get(digest)
        if engine is None:
            engine = self._build(policy_set)
            cache[digest] = engine
            while len(cache) > self.cache_size:
                cache.popitem(last=False)
        else:
            cache.move_to_end(digest)
        return engine

    # -- protocol
    def check(self, modules: Sequence[Module]) -> list[CompileError]:
        if not modules:
            return [CompileError("", 0, 0, "no Rego modules given")]
        try:
            self._build(PolicySet(tuple(modules), {}))
        except PolicyCompileError as exc:
            return exc.errors
        return []

    def prepare(self, policy_set: PolicySet) -> RegorusPreparedSet:
        self._engine_for(policy_set)  # compile now, in this thread, so errors surface here
        return RegorusPreparedSet(self, policy_set)

    def open_session(self, target_data: Mapping[str, Any] | None = None) -> RegorusSession:
        return RegorusSession(target_data)

    def run_tests(self, modules: Sequence[Module], data: Mapping[str, Any] | None = None) -> list[TestResult]:
        return run_tests_generic(self, modules, data)

    def close(self) -> None:
        self._local = _ThreadState()
