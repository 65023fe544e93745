"""Source-level support for the CEL syntax the Rust ``cel`` parser refuses or the environment renames.

The parser of ``common-expression-language`` refuses the optional syntax of cel-go (``a.?b``, ``a[?k]``),
which Kubernetes enables. :func:`rewrite` turns it into calls of helper functions with the same meaning
(cel-go: once an optional qualifier is met, the rest of the selection chain is optional too), turns
``cel.bind(x, init, body)`` into ``[init].map(x, body)[0]`` and routes ``string(...)`` and the lazy
``variables.name`` through the environment's own functions, and charges each comprehension iteration to
the evaluation's cost budget (``k8sCost``). :func:`blanked` keeps every column where it was, so syntax
errors are reported at the user's own positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<str>(?:[rR][bB]?|[bB][rR]?)?
        (?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
  | (?P<num>0[xX][0-9a-fA-F]+[uU]?|(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?[uU]?)
  | (?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{}])
  | (?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL,
)

MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


@dataclass(frozen=True)
class Token:
    kind: str  # ws | str | num | ident | op | bad
    text: str
    start: int


def tokens(source: str) -> list[Token]:
    out = []
    for m in _TOKEN.finditer(source):
        kind = m.lastgroup or "bad"
        if kind != "ws":
            out.append(Token(kind, m.group(), m.start()))
    return out


def blanked(source: str, toks: list[Token] | None = None) -> str:
    """The source with ``.?`` and ``[?`` made plain (``. ``, ``[ ``): same length, same columns."""
    chars = list(source)
    toks = tokens(source) if toks is None else toks
    for a, b in pairwise(toks):
        if a.text in (".", "[") and b.text == "?" and b.start == a.start + 1:
            chars[b.start] = " "
    return "".join(chars)


def bound_names(source: str, toks: list[Token] | None = None) -> set[str]:
    """Names bound by comprehension macros and ``cel.bind`` (the first argument of each)."""
    toks = tokens(source) if toks is None else toks
    names: set[str] = set()
    for i, t in enumerate(toks):
        if (
            t.kind == "ident"
            and i + 3 < len(toks)
            and toks[i + 1].text == "("
            and toks[i + 2].kind == "ident"
        ):
            if (t.text in MACROS and i > 0 and toks[i - 1].text == ".") or (
                t.text == "bind" and i > 1 and toks[i - 2].text == "cel"
            ):
                names.add(toks[i + 2].text)
                # two-variable comprehensions: all(k, v, ...)
                if (
                    i + 5 < len(toks)
                    and toks[i + 3].text == ","
                    and toks[i + 4].kind == "ident"
                    and toks[i + 5].text == ","
                ):
                    names.add(toks[i + 4].text)
    return names


def first_position(source: str, name: str) -> tuple[int, int] | None:
    """(line, column), 1-based, of the first token ``name`` in ``source``."""
    for t in tokens(source):
        if t.text == name:
            return position(source, t.start)
    return None


def position(source: str, offset: int) -> tuple[int, int]:
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, column


_CLOSE = {")": "(", "]": "[", "}": "{"}


def _match_open(toks: list[Token], j: int) -> int:
    depth = 0
    for k in range(j, -1, -1):
        if toks[k].text in _CLOSE:
            depth += 1
        elif toks[k].text in ("(", "[", "{"):
            depth -= 1
            if depth == 0:
                return k
    raise ValueError("unbalanced brackets")


def _match_close(toks: list[Token], j: int) -> int:
    depth = 0
    for k in range(j, len(toks)):
        if toks[k].text in ("(", "[", "{"):
            depth += 1
        elif toks[k].text in _CLOSE:
            depth -= 1
            if depth == 0:
                return k
    raise ValueError("unbalanced brackets")


def ends_expression(t: Token) -> bool:
    return t.kind in ("ident", "num", "str") or t.text in (")", "]", "}")


def _operand_start(toks: list[Token], i: int) -> int:
    """Index of the first token of the postfix chain that ends at ``toks[i - 1]``."""
    j = i - 1
    while True:
        t = toks[j]
        if t.text in _CLOSE:
            j = _match_open(toks, j)
            if (
                j > 0
                and toks[j].text in "([{"
                and (
                    (toks[j].text == "(" and toks[j - 1].kind == "ident")
                    or (toks[j].text in "[{" and ends_expression(toks[j - 1]))
                )
            ):
                j -= 1
                continue
        if j > 1 and toks[j - 1].text == "." and ends_expression(toks[j - 2]):
            j -= 2
            continue
        return j


def _join(toks: list[Token]) -> str:
    return " ".join(t.text for t in toks)


def _rewrite_once(toks: list[Token]) -> str | None:
    for i in range(1, len(toks) - 1):
        a, b = toks[i], toks[i + 1]
        optional_select = (
            a.text == "." and b.text == "?" and i + 2 < len(toks) and toks[i + 2].kind == "ident"
        )
        optional_index = a.text == "[" and b.text == "?" and ends_expression(toks[i - 1])
        if not (optional_select or optional_index):
            continue
        start = _operand_start(toks, i)
        expr = _join(toks[start:i])
        k = i
        # the chain from here on is optional: .?f .f [?k] [k] until a call or the end of the chain
        while k < len(toks):
            t = toks[k]
            if t.text == "." and k + 1 < len(toks):
                opt = toks[k + 1].text == "?"
                name_at = k + 2 if opt else k + 1
                if name_at >= len(toks) or toks[name_at].kind != "ident":
                    break
                if name_at + 1 < len(toks) and toks[name_at + 1].text == "(":
                    break  # a method call applies to the optional itself
                expr = f"k8sOptSelect({expr}, {toks[name_at].text!r})"
                k = name_at + 1
            elif t.text == "[":
                end = _match_close(toks, k)
                opt = toks[k + 1].text == "?"
                inner = _join(toks[k + 2 if opt else k + 1 : end])
                expr = f"k8sOptIndex({expr}, {inner})"
                k = end + 1
            else:
                break
        return " ".join([_join(toks[:start]), expr, _join(toks[k:])])
    return None


def _rewrite_bind(toks: list[Token]) -> str | None:
    for i in range(len(toks) - 3):
        if (
            toks[i].text == "cel"
            and toks[i + 1].text == "."
            and toks[i + 2].text == "bind"
            and toks[i + 3].text == "("
        ):
            if i > 0 and toks[i - 1].text == ".":
                continue
            end = _match_close(toks, i + 3)
            args: list[list[Token]] = [[]]
            depth = 0
            for t in toks[i + 4 : end]:
                if t.text in ("(", "[", "{"):
                    depth += 1
                elif t.text in _CLOSE:
                    depth -= 1
                if t.text == "," and depth == 0:
                    args.append([])
                else:
                    args[-1].append(t)
            if len(args) != 3:
                return None
            name, init, body = (_join(a) for a in args)
            return " ".join([_join(toks[:i]), f"[{init}].map({name}, {body})[0]", _join(toks[end + 1 :])])
    return None


def _rewrite_cost(toks: list[Token]) -> str | None:
    """``l.map(x, body)`` -> ``l.map(x, k8sCost(n) ? (body) : null)``, ``n`` the body's size in tokens: each
    iteration of a comprehension is charged to the evaluation's cost budget (policies.formats.limits), and
    checks its time limit. The condition is always true (or fails), so the body's value is unchanged; once
    per macro (the marker token stops a second pass)."""
    for i in range(1, len(toks) - 1):
        if not (toks[i].text in MACROS and toks[i - 1].text == "." and toks[i + 1].text == "("):
            continue
        end = _match_close(toks, i + 1)
        depth, last_comma = 0, -1
        for k in range(i + 2, end):
            text = toks[k].text
            if text in ("(", "[", "{"):
                depth += 1
            elif text in _CLOSE:
                depth -= 1
            elif text == "," and depth == 0:
                last_comma = k
        body = toks[last_comma + 1 : end]
        if last_comma < 0 or not body or body[0].text == "k8sCost":
            continue
        return " ".join(
            [
                _join(toks[: last_comma + 1]),
                f"k8sCost({len(body)}) ? (",
                _join(body),
                ") : null",
                _join(toks[end:]),
            ]
        )
    return None


def rewrite(source: str, lazy: frozenset[str] = frozenset(), toks: list[Token] | None = None) -> str:
    """The source in the dialect the Rust parser takes (see the module docstring)."""
    texts = {t.text for t in (tokens(source) if toks is None else toks)}
    if not texts & ({"?", "bind", "string"} | lazy | MACROS):
        return source  # nothing to rewrite (most expressions)
    text = source
    for step in (_rewrite_once, _rewrite_bind, _rewrite_cost):
        for _ in range(1000):
            out = step(tokens(text))
            if out is None:
                break
            text = out
    for _ in range(1000):
        out = _rewrite_string(tokens(text))
        if out is None:
            break
        text = out
    toks = tokens(text)
    out_toks: list[str] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        prev = toks[i - 1].text if i else ""
        if (
            t.kind == "ident"
            and t.text in lazy
            and prev != "."
            and not (prev == "(" and i > 1 and toks[i - 2].text == "has")
            and i + 2 < len(toks)
            and toks[i + 1].text == "."
            and toks[i + 2].kind == "ident"
            and not (i + 3 < len(toks) and toks[i + 3].text == "(")
        ):
            out_toks.append(f"k8sLazy({t.text!r}, {toks[i + 2].text!r})")
            i += 3
            continue
        out_toks.append(t.text)
        i += 1
    if text == source and not any(t.text in lazy for t in toks):
        return source
    return " ".join(out_toks)


def _rewrite_string(toks: list[Token]) -> str | None:
    """``string(x)`` -> ``string(k8sStr(x))`` (once per call: the marker token stops a second pass)."""
    for i in range(len(toks) - 2):
        if (
            toks[i].text == "string"
            and toks[i + 1].text == "("
            and toks[i + 2].text != "k8sStr"
            and not (i > 0 and toks[i - 1].text == ".")
        ):
            end = _match_close(toks, i + 1)
            return " ".join(
                [_join(toks[: i + 2]), "k8sStr(", _join(toks[i + 2 : end]), ")", _join(toks[end:])]
            )
    return None
