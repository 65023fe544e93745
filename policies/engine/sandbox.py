"""What a policy may not do: built-ins that reach the network or the host are refused at import.

A policy is code written by a policy author and run by the gate inside Fleetgate's network. ``http.send`` and
``net.lookup_ip_addr`` would let it reach internal services (SSRF) or leak objects by DNS; ``opa.runtime``
returns the engine's environment and configuration. Neither engine is trusted to leave them out: regorus
ships ``http.send`` and ``opa.runtime``, and ``opa run`` has no capabilities flag (only ``opa eval``,
``check`` and ``build`` take one). So:

* :func:`forbidden_calls` finds them in the source (strings and comments ignored), for every engine's
  ``check`` and ``prepare``: a module that uses one is refused with the built-in's name and line;
* the regorus evaluation worker also replaces ``http.send`` and ``opa.runtime`` with functions that raise
  (:data:`REGORUS_OVERRIDES`), so an evaluation that reached one anyway fails, and the gate blocks.

Pure built-ins (``net.cidr_*``, ``regex.*``, ``time.*``, ``trace``) are allowed.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.engine.base import CompileError, Module

FORBIDDEN_BUILTINS: dict[str, str] = {
    "http.send": "policies may not make network requests",
    "net.lookup_ip_addr": "policies may not resolve names (network access)",
    "opa.runtime": "policies may not read the engine's environment and configuration",
}

# Built-ins regorus implements, with their arity: the worker registers an extension under each name that
# raises, so that calling one is an evaluation error (fail closed) rather than a request.
REGORUS_OVERRIDES: dict[str, int] = {"http.send": 1, "opa.runtime": 0}

CODE = "rego_forbidden_builtin"


def _chains(module: Module) -> list[tuple[str, int, int]]:
    """Dotted names that start a reference (``a.b.c`` or ``a["b"].c``), with line and column."""
    from policies.engine.source import _code_tokens

    tokens = _code_tokens(module.source)
    line_starts = [0]
    for i, ch in enumerate(module.source):
        if ch == "\n":
            line_starts.append(i + 1)
    out: list[tuple[str, int, int]] = []
    for idx, tok in enumerate(tokens):
        if tok.kind != "id" or (idx and tokens[idx - 1].text == "."):
            continue
        parts = [tok.text]
        j = idx + 1
        while j + 1 < len(tokens):
            if tokens[j].text == "." and tokens[j + 1].kind == "id":
                parts.append(tokens[j + 1].text)
                j += 2
            elif (
                tokens[j].text == "["
                and tokens[j + 1].kind == "str"
                and j + 2 < len(tokens)
                and tokens[j + 2].text == "]"
            ):
                parts.append(tokens[j + 1].text.strip('"`'))
                j += 3
            else:
                break
        if len(parts) > 1:
            column = tok.start - line_starts[tok.line - 1] + 1
            out.append((".".join(parts), tok.line, column))
    return out


def forbidden_calls(modules: Sequence[Module]) -> list[CompileError]:
    """One error per use of a forbidden built-in, naming it, with the module's path and line."""
    errors: list[CompileError] = []
    for module in modules:
        for name, line, column in _chains(module):
            for builtin, why in FORBIDDEN_BUILTINS.items():
                if name == builtin or name.startswith(builtin + "."):
                    errors.append(
                        CompileError(
                            module.path,
                            line,
                            column,
                            f"built-in {builtin} is not allowed: {why}",
                            CODE,
                        )
                    )
    return errors
