"""Small, dependency-free helpers over Rego source text.

A lexer that knows strings, raw strings and comments is enough for what the gate needs:

* :func:`detect_rego_version` - v0 or v1 syntax (Gatekeeper's library is v0, new policies are v1);
* :func:`normalise_for_engine` - makes a v1 module loadable by an engine running in v0-compatible mode
  by adding ``import rego.v1`` *on the package line* (line numbers stay the same);
* :func:`split_multi_body_rules` - regorus rejects a v0 rule with several bodies (``p[x] { a } { b }``);
  repeating the head before each extra body (``p[x] { a } p[x] { b }``) means the same and keeps lines;
* :func:`namespace_source` - moves a module under a private ``data`` prefix (used on a shared OPA
  server so that two policies that both say ``package main`` never mix), again without moving lines;
* :func:`package_of`, :func:`rule_heads` - package path and top-level rule names (conftest rules, tests).

Version rule (documented for policy authors):
  1. an explicit version (``Module.rego_version``, Gatekeeper ``code[].source.version``) wins;
  2. ``import rego.v1`` means v1; any ``import future.keywords...`` means v0;
  3. otherwise the keywords ``if``, ``contains`` (not called as the v0 builtin ``contains(...)``),
     ``every`` or ``in`` mean v1; anything else is v0.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from policies.engine.base import Module


@dataclass(frozen=True)
class Token:
    kind: str  # "id", "str", "num", "op", "comment", "nl"
    text: str
    start: int
    end: int
    line: int


_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUM = re.compile(r"[0-9][0-9A-Za-z_.]*")


def tokenize(source: str) -> Iterator[Token]:
    """Yield tokens, including comments and newlines (so callers can reason about lines)."""
    i, n, line = 0, len(source), 1
    while i < n:
        c = source[i]
        if c == "\n":
            yield Token("nl", c, i, i + 1, line)
            line += 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif c == "#":
            j = source.find("\n", i)
            j = n if j < 0 else j
            yield Token("comment", source[i:j], i, j, line)
            i = j
        elif c == '"':
            j = i + 1
            while j < n and source[j] != '"':
                if source[j] == "\\":
                    j += 1
                elif source[j] == "\n":  # unterminated string: stop at the line end
                    break
                j += 1
            j = min(j + 1, n)
            yield Token("str", source[i:j], i, j, line)
            i = j
        elif c == "`":
            j = source.find("`", i + 1)
            j = n if j < 0 else j + 1
            text = source[i:j]
            yield Token("str", text, i, j, line)
            line += text.count("\n")
            i = j
        elif (m := _ID.match(source, i)) is not None:
            yield Token("id", m.group(), i, m.end(), line)
            i = m.end()
        elif (m := _NUM.match(source, i)) is not None:
            yield Token("num", m.group(), i, m.end(), line)
            i = m.end()
        else:
            yield Token("op", c, i, i + 1, line)
            i += 1


def _code_tokens(source: str) -> list[Token]:
    return [t for t in tokenize(source) if t.kind not in ("comment", "nl")]


def _imports(tokens: list[Token]) -> list[str]:
    out: list[str] = []
    for idx, tok in enumerate(tokens):
        if tok.kind == "id" and tok.text == "import" and (idx == 0 or tokens[idx - 1].line < tok.line):
            parts: list[str] = []
            j = idx + 1
            while j < len(tokens) and tokens[j].line == tok.line and tokens[j].text != "as":
                parts.append(tokens[j].text)
                j += 1
            out.append("".join(parts))
    return out


def detect_rego_version(source: str) -> str:
    """Return ``"v0"`` or ``"v1"`` following the rule in the module docstring."""
    tokens = _code_tokens(source)
    imports = _imports(tokens)
    if "rego.v1" in imports:
        return "v1"
    if any(imp.startswith("future.keywords") for imp in imports):
        return "v0"
    for idx, tok in enumerate(tokens):
        if tok.kind != "id" or (idx and tokens[idx - 1].text == "."):
            continue
        nxt = tokens[idx + 1].text if idx + 1 < len(tokens) else ""
        if tok.text in ("if", "every") or (tok.text == "contains" and nxt != "("):
            return "v1"
        if tok.text == "in" and nxt not in (":", ")"):
            return "v1"
    return "v0"


def module_version(module: Module) -> str:
    return module.rego_version or detect_rego_version(module.source)


def _package_span(tokens: list[Token]) -> tuple[int, int] | None:
    """Index range [start, end) of the package path tokens."""
    for idx, tok in enumerate(tokens):
        if tok.kind == "id" and tok.text == "package":
            j = idx + 1
            while j < len(tokens) and tokens[j].line == tok.line:
                j += 1
            return (idx + 1, j)
    return None


@functools.lru_cache(maxsize=512)  # the gate asks it of the same modules for every target (issue 19)
def package_of(source: str) -> str:
    """The module's package path, e.g. ``"lib.helpers"``. Raises ValueError when there is none."""
    tokens = _code_tokens(source)
    span = _package_span(tokens)
    if span is None or span[0] == span[1]:
        raise ValueError("module has no package declaration")
    return "".join(t.text for t in tokens[span[0] : span[1]])


def has_rego_v1_import(source: str) -> bool:
    return "rego.v1" in _imports(_code_tokens(source))


def normalise_for_engine(module: Module) -> str:
    """Source to load into an engine running in v0(-compatible) mode.

    v0 modules are returned unchanged. v1 modules get ``import rego.v1`` appended to the package
    line unless they already import it: in v0 mode that import switches the module to v1 syntax and
    semantics, and since it shares the package line, reported line numbers still match the original.
    """
    if module_version(module) != "v1" or has_rego_v1_import(module.source):
        return module.source
    tokens = _code_tokens(module.source)
    span = _package_span(tokens)
    if span is None or span[0] == span[1]:
        return module.source  # the engine will report the missing package
    end = tokens[span[1] - 1].end
    return module.source[:end] + " import rego.v1" + module.source[end:]


def namespace_source(source: str, prefix: str) -> str:
    """Move a module under ``data.<prefix>``: its package and every ``data`` reference.

    ``package main`` becomes ``package <prefix>.main`` and ``data.lib.x`` becomes
    ``data.<prefix>.lib.x``; strings and comments are left alone and no line moves.
    """
    tokens = _code_tokens(source)
    edits: list[tuple[int, str]] = []
    span = _package_span(tokens)
    if span is not None and span[0] < span[1]:
        edits.append((tokens[span[0]].start, prefix + "."))
    for idx, tok in enumerate(tokens):
        if tok.kind == "id" and tok.text == "data" and not (idx and tokens[idx - 1].text == "."):
            edits.append((tok.end, "." + prefix))
    out: list[str] = []
    last = 0
    for pos, text in sorted(edits):
        out.append(source[last:pos])
        out.append(text)
        last = pos
    out.append(source[last:])
    return "".join(out)


_KEYWORD_STARTS = frozenset({"package", "import", "else", "default"})


def rule_heads(source: str) -> list[str]:
    """Names of the top-level rules (and functions) in a module, in order, without duplicates.

    A rule head is an identifier that starts a line outside any bracket; ``default x := ...`` counts
    as ``x``.
    """
    names: list[str] = []
    depth = 0
    prev_line = 0
    after_default = False
    for tok in _code_tokens(source):
        first_on_line = tok.line != prev_line
        prev_line = tok.line
        if tok.kind == "op":
            if tok.text in "([{":
                depth += 1
            elif tok.text in ")]}":
                depth = max(0, depth - 1)
            continue
        if depth or tok.kind != "id":
            after_default = False
            continue
        if after_default or (first_on_line and tok.text not in _KEYWORD_STARTS):
            if tok.text not in names:
                names.append(tok.text)
            after_default = False
        elif first_on_line and tok.text == "default":
            after_default = True
    return names


_DIGITS = re.compile(r"^[0-9]+$")


def is_identifier_path(path: str) -> bool:
    """``a.b_c.d`` made of Rego identifiers only (safe to splice into a query)."""
    return bool(path) and all(_ID.fullmatch(p) and not _DIGITS.match(p) for p in path.split("."))


def split_multi_body_rules(source: str) -> str:
    """Rewrite ``head { a } { b }`` as ``head { a } head { b }`` (v0 rules with several bodies).

    The head is repeated on the same line as the extra body, so line numbers do not move; a head whose value
    is an object or set literal (``f(x) = {"a": x} { ... }``) is told apart from a second body. Sources
    without such rules come back unchanged. See :mod:`policies.engine.regorus_compat`.
    """
    from policies.engine.regorus_compat import split_multi_body_rules as split

    return split(source)
