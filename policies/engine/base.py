"""Engine-neutral types of the Rego layer: modules, policy sets, errors and the engine protocols.

Every engine (in-process regorus, the OPA server) implements :class:`RegoEngine`. The formats
(conftest, Gatekeeper) and the gate only talk to this protocol, so the choice of engine is a setting.

Lifecycle, for one gate run over the objects rendered for one target::

    engine = get_engine()                               # cached per process
    prepared = engine.prepare(policy_set)               # parse/compile once, cached by policy_set.digest
    with engine.open_session(target_data) as session:   # per-target data (inventory, context)
        results = prepared.evaluate_many("violations", inputs_json, session)

Every failure of an engine (bad policy, runtime error, timeout, server down) raises an
:class:`EngineError` subclass; callers must treat it as a deny (fail closed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

# --------------------------------------------------------------------------------------------- errors


class EngineError(Exception):
    """An engine could not produce a trustworthy answer. The gate turns it into a block."""

    def __init__(self, message: str, *, engine: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.engine = engine

    def __str__(self) -> str:
        return self.message


class EngineUnavailable(EngineError):
    """The engine cannot be reached (OPA server down, wrong URL)."""


class EngineTimeout(EngineError):
    """An evaluation did not finish within its time budget."""


class PolicyEvaluationError(EngineError):
    """Evaluation raised an error inside Rego (conflicting values, builtin error, ...)."""


@dataclass(frozen=True)
class CompileError:
    """One problem found in a module, with the module's own path and 1-based line/column (0 when unknown)."""

    path: str
    line: int
    column: int
    message: str
    code: str = "rego_compile_error"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "code": self.code,
        }


class PolicyCompileError(EngineError):
    """The modules of a policy set do not compile. ``errors`` carries file/line/message for each."""

    def __init__(self, errors: Sequence[CompileError], *, engine: str = "") -> None:
        self.errors = list(errors)
        summary = "; ".join(str(e) for e in self.errors[:5]) or "policy does not compile"
        super().__init__(f"policy does not compile: {summary}", engine=engine)


# --------------------------------------------------------------------------------------------- values


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):  # YAML timestamps (creationTimestamp: 2024-01-01T00:00:00Z)
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def to_json(value: Any) -> str:
    """JSON text for an engine: YAML-only types (timestamps, bytes, sets) become JSON values."""
    return json.dumps(value, default=_json_default)


@dataclass(frozen=True)
class Module:
    """One Rego source file.

    ``rego_version`` is ``"v0"``, ``"v1"`` or ``None`` to detect it from the source
    (see :func:`policies.engine.source.detect_rego_version`).
    """

    path: str
    source: str
    rego_version: str | None = None

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("a Rego module needs a path (file name)")
        if not isinstance(self.source, str):
            raise TypeError(f"Rego module {self.path}: source must be a string")
        if self.rego_version not in (None, "v0", "v1"):
            raise ValueError(f"Rego module {self.path}: rego_version must be 'v0', 'v1' or None")


@dataclass(frozen=True)
class PolicySet:
    """Modules plus static data plus named entry points: what an engine prepares once.

    ``entrypoints`` maps a name to a Rego expression evaluated per input, written against the
    plain ``data`` tree (e.g. ``[v | some v; data.k8srequiredlabels.violation[v]]``).
    ``data`` is static data (conftest data files). Per-target data (``inventory``, ``fleetgate``) is
    passed through an evaluation session instead, so one prepared set serves every target.
    """

    modules: tuple[Module, ...]
    entrypoints: Mapping[str, str]
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.modules:
            raise ValueError("a policy set needs at least one module")
        paths = [m.path for m in self.modules]
        if len(set(paths)) != len(paths):
            raise ValueError(f"duplicate module paths in policy set: {sorted(paths)}")
        for name in self.entrypoints:
            if not name.isidentifier():
                raise ValueError(f"entry point name {name!r} must be an identifier")
        for key in self.data:
            if key in RESERVED_DATA_KEYS:
                raise ValueError(f"data key {key!r} is reserved for per-target data")

    @cached_property
    def reads_inventory(self) -> bool:
        """Whether any module can read ``data.inventory`` (text search: also catches ``data["inventory"]``).

        Engines skip loading a target's inventory into sets that cannot read it."""
        return any("inventory" in m.source for m in self.modules) or any(
            "inventory" in e for e in self.entrypoints.values()
        )

    @cached_property
    def reads_context(self) -> bool:
        """Whether any module can read ``data.fleetgate.context``."""
        return any("fleetgate" in m.source for m in self.modules) or any(
            "fleetgate" in e for e in self.entrypoints.values()
        )

    @cached_property
    def digest(self) -> str:
        """Content hash: identical sets share one prepared engine."""
        doc = {
            "modules": [[m.path, m.source, m.rego_version] for m in self.modules],
            "entrypoints": dict(sorted(self.entrypoints.items())),
            "data": self.data,
        }
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(raw.encode()).hexdigest()


# Per-target data documents: ``data.inventory`` (Gatekeeper) and ``data.fleetgate.context`` (the target's
# context). Packages named ``inventory...`` or ``fleetgate.context...`` would be shadowed by them.
RESERVED_DATA_KEYS = frozenset({"inventory", "fleetgate"})


@dataclass(frozen=True)
class TestResult:
    """Outcome of one ``test_*`` rule."""

    __test__ = False  # not a pytest class

    package: str
    name: str
    passed: bool
    error: str = ""

    @property
    def full_name(self) -> str:
        return f"data.{self.package}.{self.name}"


# --------------------------------------------------------------------------------------------- protocols


@runtime_checkable
class EvaluationSession(Protocol):
    """Per-target data (``inventory``, ``fleetgate``) visible to every prepared set evaluated with it."""

    def close(self) -> None: ...

    def __enter__(self) -> EvaluationSession: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class PreparedPolicySet(Protocol):
    policy_set: PolicySet

    def evaluate(self, entrypoint: str, input: Any, session: EvaluationSession | None = None) -> list[Any]:
        """Evaluate one entry point for one input: ``[]`` when undefined, else ``[value]``."""
        ...

    def evaluate_many(
        self, entrypoint: str, inputs_json: Sequence[str], session: EvaluationSession | None = None
    ) -> list[list[Any]]:
        """Evaluate one entry point for many inputs given as JSON text (fast path). One result per input."""
        ...

    def query(self, query: str, input: Any = None, session: EvaluationSession | None = None) -> list[Any]:
        """Ad-hoc query: the value of the (single) expression for each result, ``[]`` when undefined."""
        ...


@runtime_checkable
class RegoEngine(Protocol):
    name: str

    def check(self, modules: Sequence[Module]) -> list[CompileError]:
        """Parse and compile the modules together; return every error found (empty list = valid)."""
        ...

    def prepare(self, policy_set: PolicySet) -> PreparedPolicySet:
        """Compile the set once (cached by digest). Raises PolicyCompileError / EngineError."""
        ...

    def open_session(self, target_data: Mapping[str, Any] | None = None) -> EvaluationSession:
        """Start a session carrying per-target data: keys ``inventory`` and/or ``fleetgate`` only."""
        ...

    def run_tests(self, modules: Sequence[Module], data: Mapping[str, Any] | None = None) -> list[TestResult]:
        """Run every ``test_*`` rule like ``opa test``: passed when the rule is defined and not false."""
        ...

    def close(self) -> None: ...


def check_target_data(target_data: Mapping[str, Any] | None) -> dict[str, Any]:
    data = dict(target_data or {})
    unknown = set(data) - RESERVED_DATA_KEYS
    if unknown:
        raise ValueError(f"per-target data may only hold {sorted(RESERVED_DATA_KEYS)}, got {sorted(unknown)}")
    data.setdefault("inventory", {})
    fleetgate = dict(data.get("fleetgate") or {})
    if set(fleetgate) - {"context"}:
        raise ValueError("per-target data.fleetgate may only hold 'context'")
    fleetgate.setdefault("context", {})
    data["fleetgate"] = fleetgate
    return data


def entry_package(policy_set: PolicySet) -> str:
    """Package of the generated module that holds a set's entry points."""
    return f"fleetgate_entry_{policy_set.digest[:16]}"


def entry_module_source(policy_set: PolicySet, package: str) -> str:
    """The generated module: ``ep_<name> := [y | y := <expr>]`` per entry point (v0 and v1 syntax alike).

    Wrapping in an array comprehension makes "undefined" an empty list instead of an absent result.
    """
    lines = [f"package {package}", ""]
    for name, expr in policy_set.entrypoints.items():
        lines.append(f"ep_{name} := [y | y := ({expr})]")
    return "\n".join(lines) + "\n"


def run_tests_generic(
    engine: RegoEngine, modules: Sequence[Module], data: Mapping[str, Any] | None = None
) -> list[TestResult]:
    """``opa test`` semantics on any engine: every top-level ``test_*`` rule must be defined and not false."""
    from policies.engine.source import package_of, rule_heads

    tests: list[tuple[str, str]] = []
    for module in modules:
        try:
            package = package_of(module.source)
        except ValueError as exc:
            raise PolicyCompileError([CompileError(module.path, 0, 0, str(exc))], engine=engine.name) from exc
        tests.extend((package, name) for name in rule_heads(module.source) if name.startswith("test_"))
    if not tests:
        return []
    entrypoints = {f"t{i}": f"data.{pkg}.{name}" for i, (pkg, name) in enumerate(tests)}
    prepared = engine.prepare(PolicySet(tuple(modules), entrypoints, dict(data or {})))
    results: list[TestResult] = []
    for i, (pkg, name) in enumerate(tests):
        try:
            value = prepared.evaluate(f"t{i}", None)
        except EngineError as exc:
            if isinstance(exc, EngineUnavailable):
                raise
            results.append(TestResult(pkg, name, False, str(exc)))
            continue
        passed = bool(value) and value[0] is not False
        results.append(TestResult(pkg, name, passed, "" if passed else "test rule is undefined or false"))
    return results
