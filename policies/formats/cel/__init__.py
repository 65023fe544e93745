"""CEL for the admission-style policy languages (ValidatingAdmissionPolicy, Kyverno ``validate.cel``).

Built on ``common-expression-language`` (the Rust ``cel`` crate; measured against ``cel-python`` in
docs/benchmarks.md), with the Kubernetes CEL libraries it lacks written once in this package (see
docs/policies.md for the list of what is and is not available).

API::

    program = compile_expression("object.spec.replicas <= params.max", ["object", "params"])
    program.evaluate({"object": {...}, "params": {...}})        # -> Python value (bool, str, int, ...)

- :func:`compile_expression` ``(source, variables, lazy=())`` parses the expression and checks that every
  variable and function it names exists; it raises :class:`CelError` (a ``policies.formats.FormatError``)
  with ``line``/``column`` (1-based) for a syntax error, an undeclared variable or function, or the
  ``authorizer`` variable (authorization checks need an API server; the gate has none).
- ``lazy`` names variables whose value is a mapping computed on demand: ``variables.x`` in the source reads
  ``activation["variables"]["x"]`` only when the evaluation reaches it (VAP ``variables`` are lazy).
- :meth:`Program.evaluate` ``(activation)`` takes plain Python values (dicts, lists, str, int, float, bool,
  None) and returns the result; a runtime failure (no such key, no such overload, a bad quantity...)
  raises :class:`CelEvalError` with cel-go-like wording. Quantities, URLs, IPs and CIDRs come back as the
  tagged maps of :mod:`policies.formats.cel.values`; ``optional`` values as ``cel.OptionalValue``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

from policies.formats import FormatError, goregex, limits
from policies.formats.cel import _syntax
from policies.formats.cel.library import BUILTINS, FUNCTIONS, NAMESPACES
from policies.formats.cel.values import CelRuntimeError

# The crate logs a warning for every exception a Python function raises; those are reported to the caller
# as CelEvalError already (and a policy may fail on every object of a render), so only errors are logged.
logging.getLogger("cel").setLevel(logging.ERROR)

__all__ = ["CelError", "CelEvalError", "Program", "compile_expression", "member_references"]

#: cel-go namespaces whose functions the gate does not provide (a clear message instead of "undeclared").
_MISSING_LIBRARIES = {"math", "sets", "base64", "lists", "semver", "format", "encoders"}
#: Type names, which the crate reports as variables (``type(x) == string``).
_TYPE_NAMES = {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"}
_PARSE_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")
_PY_FAILURE = re.compile(r"Python function call failed: (\w+): (.*?)\. Check function arguments", re.DOTALL)
_CONVERSION = re.compile(r"Function '(int|uint|double)' error: string parse error")
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_SHORT_NAMES: dict[str, list[str]] = {}
for _name in FUNCTIONS:
    _SHORT_NAMES.setdefault(_name.rpartition(".")[2], []).append(_name)


class CelError(FormatError):
    """The expression does not compile; ``line`` and ``column`` (1-based) point into its source."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        self.reason = message
        self.line = line
        self.column = column
        super().__init__(f"{message} (line {line}, column {column})" if line else message)


class CelEvalError(Exception):
    """The expression failed while running (cel-go would return an error value)."""


def _undeclared(source: str, name: str, message: str) -> CelError:
    line, column = _syntax.first_position(source, name) or (0, 0)
    return CelError(message, line, column)


@dataclass(frozen=True)
class Program:
    """A compiled expression; evaluate it as often as needed (thread-safe)."""

    source: str
    variables: frozenset[str]
    _program: Any = field(repr=False)
    _functions: Mapping[str, Callable[..., Any]] = field(repr=False)
    _lazy: frozenset[str] = field(repr=False, default=frozenset())
    _materialize: frozenset[str] = field(repr=False, default=frozenset())
    _costed: bool = field(repr=False, default=False)  # comprehensions call k8sCost (the budget)

    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        values: dict[str, Any] = {}
        for name in self.variables:
            if name in activation:
                value = activation[name]
                if name in self._materialize and isinstance(value, Mapping):
                    value = {k: value[k] for k in value}
                values[name] = value
        functions = self._functions
        stopped: list[str] = []
        if self._lazy:

            def lazy(namespace: str, name: str) -> Any:
                holder = activation.get(namespace)
                if not isinstance(holder, Mapping) or name not in holder:
                    raise CelRuntimeError(f"no such key: {name}")
                try:
                    return holder[name]
                except limits.EvaluationTimeout as exc:  # a variable's own evaluation ran out of time
                    stopped.append(str(exc))
                    raise

            functions = {**functions, "k8sLazy": lazy}
        if self._costed:
            functions = {**functions, "k8sCost": _budget(stopped)}
        try:
            return self._program.execute(cel.Context(values, dict(functions)))
        except CelEvalError:
            raise
        except Exception as exc:
            if stopped or isinstance(exc, limits.EvaluationTimeout):
                raise limits.EvaluationTimeout(stopped[0] if stopped else str(exc), engine="cel") from None
            raise CelEvalError(_runtime_message(exc)) from None


def _budget(stopped: list[str]) -> Callable[[int], bool]:
    """``k8sCost(n)``, called by every comprehension iteration (see ``_syntax.rewrite``): ``n`` units off the
    evaluation's budget (:data:`limits.PER_CALL_COST_LIMIT`), then the time limit (``stopped`` receives the
    timeout's message, so that the evaluation raises :class:`limits.EvaluationTimeout`)."""
    end, what = limits.evaluation_end()
    left = [limits.PER_CALL_COST_LIMIT]

    def cost(units: int) -> bool:
        left[0] -= units
        if left[0] < 0:
            raise CelRuntimeError("operation cancelled: actual cost limit exceeded")
        if end is not None and time.monotonic() >= end:
            stopped.append(f"CEL evaluation stopped at {what}")
            raise CelRuntimeError(stopped[-1])
        return True

    return cost


def _runtime_message(exc: BaseException) -> str:
    text = str(exc)
    m = _PY_FAILURE.search(text)
    if m:
        if m.group(1) in ("CelRuntimeError", "CelEvalError"):
            return m.group(2)
        if m.group(1) == "KeyError":
            return f"no such key: {m.group(2).strip(chr(39))}"
        return f"{m.group(1)}: {m.group(2)}"
    if text.startswith("No such overload"):
        # the crate's "No such overload: the operation is not defined for the given operand types" is
        # cel-go's "no such overload" (e.g. orValue() on a value that is not optional, cel-go >= 0.28)
        return "no such overload"
    conversion = _CONVERSION.search(text)
    if conversion:
        return f"type conversion error from 'string' to '{conversion.group(1)}'"
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0] if exc.args else ''}"
    if isinstance(exc, IndexError):
        return text  # "index out of bounds: 5", as cel-go says
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if "Undefined variable or function" in text:
        m2 = re.search(r"'([^']+)'", text)
        return f"undeclared reference to '{m2.group(1) if m2 else '?'}'"
    return text.split(". CEL does not coerce")[0].split(". Check ")[0]


#: Functions whose pattern argument Kubernetes compiles when the policy is created, if it is a literal.
_REGEX_FUNCTIONS = frozenset({"matches", "find", "findAll"})


def _check_literal_patterns(source: str, toks: list[_syntax.Token]) -> None:
    """A literal pattern of ``matches``/``find``/``findAll`` that Go's regexp (RE2) refuses (backreferences,
    look-around, bad syntax) is refused when the policy is saved, as the API server refuses such a policy
    (cel-go compiles constant patterns ahead of time)."""
    for i, t in enumerate(toks):
        if t.text not in _REGEX_FUNCTIONS or i + 2 >= len(toks) or toks[i + 1].text != "(":
            continue
        if not (i and toks[i - 1].text == "."):
            continue  # receiver.find('pattern') (the crate has no global matches(text, pattern))
        literal = toks[i + 2]
        if literal.kind != "str" or i + 3 >= len(toks) or toks[i + 3].text not in (")", ","):
            continue
        try:
            pattern = cel.compile(literal.text).execute({})
        except Exception:  # noqa: S112 - bytes or a malformed literal: the parser reports it
            continue
        if not isinstance(pattern, str):
            continue
        try:
            goregex.compile(pattern)
        except goregex.GoRegexError as exc:
            line, column = _syntax.position(source, literal.start)
            # cel-go's checker refuses a bad matches() literal in its own words; find/findAll fail when
            # the API server instantiates the program, with Go's parse error
            raise CelError(
                "invalid matches argument" if t.text == "matches" else exc.reason, line, column
            ) from None


def compile_expression(source: str, variables: Iterable[str], lazy: Iterable[str] = ()) -> Program:
    """Compile ``source`` with the declared top-level ``variables`` (see the module docstring)."""
    if not isinstance(source, str) or not source.strip():
        raise CelError("the expression is empty")
    declared = frozenset(variables)
    lazy_names = frozenset(lazy) & declared
    source_tokens = _syntax.tokens(source)
    for i, token in enumerate(source_tokens):
        if token.text == "?" and i:
            before = source_tokens[i - 1]
            literal_entry = before.text in ("{", ",") or (
                before.text == "[" and not (i > 1 and _syntax.ends_expression(source_tokens[i - 2]))
            )
            if literal_entry:
                line, column = _syntax.position(source, token.start)
                raise CelError(
                    "optional entries in list and map literals ([?x], {?k: v}) are not available in the gate",
                    line,
                    column,
                )
    blanked = _syntax.blanked(source, source_tokens)
    try:
        program = cel.compile(blanked)
    except ValueError as exc:
        m = _PARSE_ERROR.search(str(exc))
        if m:
            raise CelError(m.group(3).strip(), int(m.group(1)), int(m.group(2))) from None
        raise CelError(str(exc)) from None
    _check_literal_patterns(source, source_tokens)
    try:
        rewritten = _syntax.rewrite(source, lazy_names, source_tokens)
        if rewritten != blanked:
            program = cel.compile(rewritten)
    except (ValueError, IndexError) as exc:
        raise CelError(f"the gate cannot parse this expression: {exc}") from None
    refs = program.references()
    bound = _syntax.bound_names(source, source_tokens)
    top: set[str] = set()
    for name in refs["variables"]:
        if name == "authorizer":
            raise _undeclared(
                source,
                name,
                "'authorizer' is not available: the gate evaluates policies without an API server, "
                "so authorization checks cannot run",
            )
        if name in declared:
            top.add(name)
        elif name in bound or name in NAMESPACES or name in _TYPE_NAMES:
            continue
        elif name in _MISSING_LIBRARIES:
            raise _undeclared(
                source, name, f"the CEL library '{name}' is not available in the gate (see docs/policies.md)"
            )
        else:
            raise _undeclared(source, name, f"undeclared reference to '{name}'")
    used_functions: dict[str, Callable[..., Any]] = {}
    for fn in refs["functions"]:
        if not _IDENTIFIER.match(fn) or fn in BUILTINS or fn in ("k8sLazy", "k8sCost"):
            continue
        if fn in _syntax.MACROS:
            raise _undeclared(
                source, fn, f"two-variable comprehensions ({fn}(k, v, ...)) are not available in the gate"
            )
        if fn not in _SHORT_NAMES:
            raise _undeclared(
                source, fn, f"undeclared reference to '{fn}' (no such function in the gate's CEL)"
            )
        for full in _SHORT_NAMES[fn]:
            used_functions[full] = FUNCTIONS[full]
    rewritten_tokens = {t.text for t in (source_tokens if rewritten == source else _syntax.tokens(rewritten))}
    return Program(
        source=source,
        variables=frozenset(top),
        _program=program,
        _functions=used_functions,
        _lazy=lazy_names if "k8sLazy" in rewritten_tokens else frozenset(),
        _materialize=frozenset(n for n in lazy_names if n in top),
        _costed="k8sCost" in rewritten_tokens,
    )


def member_references(source: str, root: str) -> list[tuple[str, int, int]]:
    """``(name, line, column)`` of every ``root.name`` in ``source`` (e.g. the ``variables.x`` it uses)."""
    toks = _syntax.tokens(source)
    out = []
    for i, t in enumerate(toks[:-2]):
        if t.text == root and not (i and toks[i - 1].text == ".") and toks[i + 1].text == ".":
            line, column = _syntax.position(source, toks[i + 2].start)
            out.append((toks[i + 2].text, line, column))
    return out
