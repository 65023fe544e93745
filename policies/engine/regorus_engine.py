"""In-process Rego with regorus (PyPI ``gordon-to-regorus``, import name ``regorus``).

Facts this module is built around (see shared/reference/policy-formats.md):

* an ``regorus.Engine`` may only be used from the thread that created it (otherwise a
  ``PanicException``, which is a BaseException); so prepared engines live in a per-thread cache keyed
  by the policy set's digest, and a prepared set transparently builds its engine again in a new thread;
* with ``RUST_BACKTRACE`` set, every error captures a backtrace (40x slower and noisy messages), so the
  variable is removed from the process environment before the first engine is built;
* engines run in v0 mode; v1 modules get ``import rego.v1`` on their package line
  (:func:`policies.engine.source.normalise_for_engine`), which switches them to v1 in that mode;
* there is no way to interrupt an evaluation in-process (the binding exposes no execution limit), so
  evaluations run in worker processes (:mod:`policies.engine.regorus_pool`) that are killed at the
  ``timeout`` of each evaluation (:class:`EngineTimeout`, the gate blocks) and have a memory limit;
  compiling (``check``, ``prepare``) stays in this process, where errors surface with their lines;
* built-ins that reach the network or the host are refused at compile time and disabled in the workers
  (:mod:`policies.engine.sandbox`).
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from policies.engine.base import (
    CompileError,
    Module,
    PolicyCompileError,
    PolicySet,
    TestResult,
    check_target_data,
    entry_module_source,
    entry_package,
    run_tests_generic,
    to_json,
)
from policies.engine.comprehension_scopes import rename_shadowing_locals
from policies.engine.gofmt import rego_sprintf
from policies.engine.regorus_compat import SPRINTF_NAME, original_column, regorus_compatible
from policies.engine.regorus_pool import WorkerPool, get_pool
from policies.engine.sandbox import REGORUS_OVERRIDES, forbidden_calls
from policies.engine.source import module_version, normalise_for_engine


def _scrub_backtrace_env() -> None:
    for var in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE"):
        os.environ.pop(var, None)


_scrub_backtrace_env()

import regorus  # noqa: E402 - must come after the environment is cleaned

ENTRY_PATH = "__fleetgate_entry__.rego"
_LOCATION = re.compile(r"-->\s*(?P<file>.+?):(?P<line>\d+):(?P<col>\d+)")
_MESSAGE = re.compile(r"^error:\s*(?P<msg>.*)$", re.MULTILINE)
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)
_MISSING = object()


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
    """The module as regorus gets it: rewritten where regorus would answer differently from OPA
    (:mod:`policies.engine.regorus_compat`: several bodies, ``(``-lines, ``sprintf`` arity, ``not`` of a call
    with an undefined argument; a comprehension that re-declares an outer variable,
    :mod:`policies.engine.comprehension_scopes`), and v1 modules with ``import rego.v1``. Lines do not
    move."""
    v0 = module_version(module) == "v0"
    text = regorus_compatible(rename_shadowing_locals(module.source), v0=v0)
    if v0:
        return text
    return normalise_for_engine(Module(module.path, text, "v1"))


def _short(text: str) -> str:
    err = parse_regorus_error(text)
    return str(err) if err.line else err.message


class RegorusSession:
    """Per-target data, sent once to each worker that evaluates a set which reads it."""

    def __init__(self, target_data: Mapping[str, Any] | None, pool: WorkerPool | None = None) -> None:
        data = check_target_data(target_data)
        self.id = "s_" + uuid.uuid4().hex
        self.inventory_json = to_json({"inventory": data["inventory"]})
        self.fleetgate_json = to_json({"fleetgate": data["fleetgate"]})
        self._pool = pool

    def spec(self) -> dict[str, str]:
        return {"id": self.id, "inventory": self.inventory_json, "fleetgate": self.fleetgate_json}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.forget_session(self.id)
            self._pool = None

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
        self._spec: dict[str, Any] | None = None

    def set_spec(self) -> dict[str, Any]:
        """What a worker needs to build this set: the sources as regorus gets them, data, what it reads.
        Built once per set in the engine (the source rewrite is not repeated each time a set is prepared)."""
        if self._spec is None:
            self._spec = self._owner.spec_of(self.policy_set.digest)
        if self._spec is None:
            modules = [[m.path, regorus_source(m)] for m in self.policy_set.modules]
            modules.append([ENTRY_PATH, entry_module_source(self.policy_set, self.entry_package)])
            self._spec = {
                "digest": self.policy_set.digest,
                "modules": modules,
                "data": to_json(dict(self.policy_set.data)) if self.policy_set.data else None,
                "inventory": self.uses_inventory,
                "fleetgate": self.uses_fleetgate,
            }
            self._owner.keep_spec(self.policy_set.digest, self._spec)
        return self._spec

    def _session(self, session: Any) -> dict[str, str] | None:
        if session is None:
            return None
        if not isinstance(session, RegorusSession):
            raise TypeError("a regorus prepared set needs a session opened by the regorus engine")
        return session.spec()

    def _run(self, op: str, target: str, inputs_json: Sequence[str], session: Any) -> list[Any]:
        raw = self._owner.pool.run(
            op=op,
            target=target,
            set_spec=self.set_spec(),
            session=self._session(session),
            inputs=[text.encode("utf-8") for text in inputs_json],
            timeout=self._owner.timeout,
            describe=_short,
        )
        # Most inputs give the same result (no finding): each distinct result text is decoded once and
        # the value shared between the inputs that gave it, so results are read-only for callers.
        decoded: dict[bytes, Any] = {}
        out = []
        for text in raw:
            value = decoded.get(text, _MISSING)
            if value is _MISSING:
                value = decoded[text] = json.loads(text)
            out.append(value)
        return out

    def _rule(self, entrypoint: str) -> str:
        if entrypoint not in self.policy_set.entrypoints:
            raise KeyError(f"unknown entry point {entrypoint!r}")
        return f"data.{self.entry_package}.ep_{entrypoint}"

    def evaluate(self, entrypoint: str, input: Any, session: Any = None) -> list[Any]:
        return self.evaluate_many(entrypoint, [to_json(input)], session)[0]

    def evaluate_many(
        self, entrypoint: str, inputs_json: Sequence[str], session: Any = None
    ) -> list[list[Any]]:
        values = self._run("eval", self._rule(entrypoint), inputs_json, session)
        return [v if isinstance(v, list) else [] for v in values]

    def query(self, query: str, input: Any = None, session: Any = None) -> list[Any]:
        out = self._run("query", f"[y | y := ({query})]", [to_json(input)], session)[0]
        rows = out.get("result") or []
        return rows[0]["expressions"][0]["value"] if rows else []


class RegorusEngine:
    """The embedded engine: compiles in this process, evaluates in worker processes with hard limits.

    ``timeout``: seconds per evaluation (one input), past which the worker is killed. ``workers``
    (``FLEETGATE_REGO_WORKERS``, default the CPU count) and ``memory_mb`` (``FLEETGATE_REGO_MEMORY_MB``,
    default 1024; 0 = no limit) size the process-wide worker pool. Safe to share between threads."""

    name = "regorus"

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        cache_size: int = 256,
        workers: int | None = None,
        memory_mb: int | None = None,
    ) -> None:
        _scrub_backtrace_env()
        self.timeout = timeout
        self.cache_size = cache_size
        if workers is None:
            workers = os.cpu_count() or 2
        if memory_mb is None:
            memory_mb = 1024
        self.workers = workers
        self.memory_mb = memory_mb
        self._compiled: OrderedDict[str, bool] = OrderedDict()
        self._specs: dict[str, dict[str, Any]] = {}  # of the compiled sets (digest -> set_spec)
        self._lock = threading.Lock()

    @property
    def pool(self) -> WorkerPool:
        return get_pool(self.workers, self.memory_mb, REGORUS_OVERRIDES)

    # -- building
    def _build(self, policy_set: PolicySet) -> Any:
        forbidden = forbidden_calls(policy_set.modules)
        if forbidden:
            raise PolicyCompileError(forbidden, engine=self.name)
        engine = regorus.Engine()
        engine.set_rego_v0(True)
        engine.add_extension(SPRINTF_NAME, 2, rego_sprintf)  # what regorus_compat routes sprintf calls to
        errors: list[CompileError] = []
        for module in policy_set.modules:
            source = regorus_source(module)
            try:
                engine.add_policy(module.path, source)
            except BaseException as exc:
                if isinstance(exc, _PASS_THROUGH):
                    raise
                err = parse_regorus_error(str(exc), module.path, "rego_parse_error")
                if err.line and source != module.source:  # the user's column, not the rewritten text's
                    column = original_column(module.source, source, err.line, err.column)
                    err = CompileError(err.path, err.line, column, err.message, err.code)
                errors.append(err)
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

    def _ensure_compiled(self, policy_set: PolicySet) -> None:
        digest = policy_set.digest
        with self._lock:
            if digest in self._compiled:
                self._compiled.move_to_end(digest)
                return
        self._build(policy_set)
        with self._lock:
            self._compiled[digest] = True
            while len(self._compiled) > self.cache_size:
                old, _ = self._compiled.popitem(last=False)
                self._specs.pop(old, None)

    def spec_of(self, digest: str) -> dict[str, Any] | None:
        with self._lock:
            return self._specs.get(digest)

    def keep_spec(self, digest: str, spec: dict[str, Any]) -> None:
        with self._lock:
            if digest in self._compiled:
                self._specs[digest] = spec

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
        self._ensure_compiled(policy_set)  # compile now, in this process, so errors surface here
        return RegorusPreparedSet(self, policy_set)

    def open_session(self, target_data: Mapping[str, Any] | None = None) -> RegorusSession:
        return RegorusSession(target_data, self.pool)

    def run_tests(self, modules: Sequence[Module], data: Mapping[str, Any] | None = None) -> list[TestResult]:
        return run_tests_generic(self, modules, data)

    def close(self) -> None:
        with self._lock:
            self._compiled.clear()
            self._specs.clear()
