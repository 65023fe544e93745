"""Source rewrites that make regorus answer like OPA on valid Rego (measured differences, see README.md).

regorus (PyPI ``gordon-to-regorus``) parses and evaluates some valid OPA Rego differently. Each rewrite below
is applied to the text regorus gets, never to what the user stored, and keeps every line where it was (an
error still names the user's line):

* **several bodies** (v0 ``head { a } { b }``): regorus reads the extra bodies as ``else`` bodies (value
  ``true``, refused for set rules); the head is repeated before each extra body instead
  (``head { a } head { b }``), which is what OPA means;
* **a line that starts with ``(``** inside a body: regorus continues the previous expression as a call
  (``x\\n(y)`` is ``x(y)``), OPA starts a new expression; a ``;`` is put at the end of the previous line;
* **``sprintf`` with fewer arguments than verbs**: regorus raises, OPA (Go's fmt) prints ``%!v(MISSING)``;
  when the format is a string literal and the arguments an array literal, the surplus verbs are written as
  that literal text;
* **other ``sprintf`` verbs**: regorus raises on flags, a precision with a width, ``%T``, ``%#v`` and surplus
  arguments, and prints other text than Go for ``%f``/``%e``/``%g``/``%o``/``%-5s``...; a call whose
  literal format has a verb but plain ``%v``/``%s``/``%d`` (or surplus arguments) becomes
  ``__fleetgate_sprintf``, OPA's sprintf (:mod:`policies.engine.gofmt`) registered as a regorus extension.
  Plain verbs stay on regorus' own: not every value can cross into an extension (a set of objects, a number
  beyond 64 bits);
* **``not`` of a call whose argument is undefined**: OPA evaluates the arguments of a negated call (or of a
  comparison other than ``==``) before the ``not`` (compiler stage RewriteDynamicTerms, and nested calls
  hoisted by RewriteExprTerms), so ``not f(input.missing)`` makes the body fail; regorus makes it true. The
  arguments are bound to fresh variables before the ``not``, as OPA does.

The scanner is token based: it knows strings, raw strings and comments (``source.tokenize``), rule heads and
bodies, object/set literals versus bodies, comprehensions, and ``else`` chains.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field

from policies.engine.source import Token, tokenize

# Identifiers after which a ``{`` starts a term (object/set literal), not a body.
_TERM_AFTER = frozenset(
    {"contains", "in", "not", "some", "with", "as", "default", "package", "import", "every"}
)
# Identifiers that are keywords, never the end of an operand.
_KEYWORDS = frozenset(_TERM_AFTER | {"if", "else"})
_STATEMENT_KEYWORDS = frozenset({"package", "import", "default"})
HOIST_PREFIX = "__fleetgate_arg"
SPRINTF_NAME = "__fleetgate_sprintf"  # OPA's sprintf (policies/engine/gofmt.py), registered by regorus_worker


def _operand_end(tok: Token | None) -> bool:
    if tok is None:
        return False
    if tok.kind in ("num", "str"):
        return True
    if tok.kind == "id":
        return tok.text not in _KEYWORDS
    return tok.text in (")", "]", "}")


@dataclass
class _Group:
    open_idx: int
    text: str  # "{", "[", "("
    kind: str  # "body" (statements separated by newlines or ';'), "literal", "paren", "index"
    body_mode: bool = False


@dataclass
class _Statement:
    start: int
    first_body: int | None = None


@dataclass
class Rewrite:
    """Insertions/replacements on the source; ``apply`` returns the new text (lines unchanged)."""

    source: str
    edits: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, replacement)

    def insert(self, pos: int, text: str) -> None:
        self.edits.append((pos, pos, text))

    def replace(self, start: int, end: int, text: str) -> None:
        self.edits.append((start, end, text))

    def apply(self) -> str:
        out: list[str] = []
        last = 0
        for start, end, text in sorted(self.edits, key=lambda e: (e[0], e[1])):
            if start < last:  # overlapping edits: keep the first (never happens for well-formed input)
                continue
            out.append(self.source[last:start])
            out.append(text)
            last = end
        out.append(self.source[last:])
        return "".join(out)


def _one_line(tokens: list[Token], source: str) -> str:
    """The tokens as text on one line: comments dropped, spacing kept where the source had none, raw
    strings that span lines turned into JSON strings."""
    parts: list[str] = []
    prev: Token | None = None
    for tok in tokens:
        text = tok.text
        if tok.kind == "str" and text.startswith("`") and "\n" in text:
            text = json.dumps(text[1:-1])
        if prev is not None and source[prev.end : tok.start] != "":
            parts.append(" ")
        parts.append(text)
        prev = tok
    return "".join(parts)


class _Scanner:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = [t for t in tokenize(source) if t.kind not in ("comment", "nl")]
        n = len(self.tokens)
        self.match: dict[int, int] = {}  # open bracket index -> close index (and back)
        self.kind: dict[int, str] = {}  # open bracket index -> group kind
        self.body_mode_from: dict[int, int] = {}  # open index -> index of '|' of a comprehension
        self.statements: list[_Statement] = []
        self.extra_bodies: list[tuple[int, _Statement]] = []
        stack: list[_Group] = []
        stmt: _Statement | None = None
        closed_body = False  # the last token was '}' closing a body
        for i, tok in enumerate(self.tokens):
            prev = self.tokens[i - 1] if i else None
            first_on_line = prev is None or prev.line < tok.line
            if not stack:
                if (
                    tok.kind == "id"
                    and first_on_line
                    and tok.text != "else"
                    and (prev is None or _operand_end(prev) or prev.text in _STATEMENT_KEYWORDS)
                ):
                    stmt = _Statement(i)
                    self.statements.append(stmt)
            if tok.kind == "op" and tok.text in "([{":
                if tok.text == "{":
                    if stack and not stack[-1].body_mode:
                        kind = "literal"
                    elif stack:
                        same_line = prev is not None and prev.line == tok.line
                        kind = "body" if same_line and _operand_end(prev) else "literal"
                    else:
                        kind = (
                            "body"
                            if prev is not None and (_operand_end(prev) or prev.text in ("if", "else"))
                            else "literal"
                        )
                        if kind == "body" and stmt is not None:
                            if stmt.first_body is None:
                                stmt.first_body = i
                            elif closed_body:
                                self.extra_bodies.append((i, stmt))
                elif tok.text == "[":
                    kind = (
                        "index"
                        if _operand_end(prev) and prev is not None and prev.end == tok.start
                        else "literal"
                    )
                else:
                    kind = "paren"
                stack.append(_Group(i, tok.text, kind, body_mode=kind == "body"))
                self.kind[i] = kind
                closed_body = False
                continue
            if tok.kind == "op" and tok.text in ")]}":
                closed_body = False
                if stack:
                    group = stack.pop()
                    self.match[group.open_idx] = i
                    self.match[i] = group.open_idx
                    closed_body = group.kind == "body" and not stack
                continue
            closed_body = False
            if tok.text == "|" and stack and stack[-1].kind == "literal" and not stack[-1].body_mode:
                stack[-1].body_mode = True
                self.body_mode_from[stack[-1].open_idx] = i
        self.count = n
        self.documents = _document_names(source)

    # ---- context of a token
    def enclosing(self, idx: int) -> int | None:
        """Index of the innermost open bracket around token ``idx`` (None at top level)."""
        depth = 0
        for j in range(idx - 1, -1, -1):
            t = self.tokens[j]
            if t.kind != "op":
                continue
            if t.text in ")]}":
                depth += 1
            elif t.text in "([{":
                if depth == 0:
                    return j
                depth -= 1
        return None

    def in_body(self, idx: int) -> bool:
        """Token ``idx`` sits directly in a body: newline- or ';'-separated expressions."""
        open_idx = self.enclosing(idx)
        if open_idx is None:
            return False
        if self.kind.get(open_idx) == "body":
            return True
        bar = self.body_mode_from.get(open_idx)
        return bar is not None and bar < idx


def _document_names(source: str) -> frozenset[str]:
    """Names that are documents, not local variables: the module's rules and its imports."""
    from policies.engine.source import rule_heads

    names = set(rule_heads(source)) | {"input", "data"}
    for line in source.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "import":
            names.add(parts[3] if len(parts) >= 4 and parts[2] == "as" else parts[1].split(".")[-1])
    return frozenset(names)


# --------------------------------------------------------------------------------------------- rewrites


def _split_bodies(sc: _Scanner, rw: Rewrite) -> None:
    for brace, stmt in sc.extra_bodies:
        head = _one_line(sc.tokens[stmt.start : stmt.first_body or brace], sc.source)
        rw.insert(sc.tokens[brace].start, head + " ")


def _paren_lines(sc: _Scanner, rw: Rewrite) -> None:
    for i, tok in enumerate(sc.tokens):
        if tok.text != "(" or i == 0:
            continue
        prev = sc.tokens[i - 1]
        if prev.line < tok.line and _operand_end(prev) and sc.in_body(i):
            rw.insert(prev.end, ";")


_VERB = re.compile(r"%([+\-# 0]*)(\d*)(?:\.(\d*))?(.)", re.DOTALL)


def _format_verbs(literal: str) -> list[tuple[int, int, str]] | None:
    """Verbs of a Go format string literal (token text, quotes included): (start, end, verb). None when the
    format uses argument indexes or '*' (not rewritten)."""
    out: list[tuple[int, int, str]] = []
    i = 1
    body_end = len(literal) - 1
    raw = literal.startswith("`")
    while i < body_end:
        c = literal[i]
        if c == "\\" and not raw:
            i += 2
            continue
        if c != "%":
            i += 1
            continue
        if literal[i + 1 : i + 2] in ("[", "*") or "*" in literal[i + 1 : i + 8].split("%")[0][:4]:
            return None
        m = _VERB.match(literal, i, body_end)
        if m is None:
            return out
        if m.group(4) != "%":
            out.append((m.start(), m.end(), m.group(4)))
        i = m.end()
    return out


def _regorus_prints_like_go(spec: str) -> bool:
    """A verb regorus' own sprintf prints as Go does (for values of the verb's type): ``%v``, ``%s``, ``%d``
    without flags, width or precision. Any other goes to OPA's sprintf (:data:`SPRINTF_NAME`)."""
    return spec in ("%v", "%s", "%d")


def _split_args(sc: _Scanner, open_idx: int) -> list[tuple[int, int]]:
    """Top-level argument token ranges [start, end) of the bracket group opened at ``open_idx``."""
    close = sc.match.get(open_idx)
    if close is None:
        return []
    args: list[tuple[int, int]] = []
    start = open_idx + 1
    j = start
    while j < close:
        t = sc.tokens[j]
        if t.kind == "op" and t.text in "([{" and j in sc.match:
            j = sc.match[j] + 1
            continue
        if t.text == ",":
            args.append((start, j))
            start = j + 1
        j += 1
    if start < close:
        args.append((start, close))
    return args


def _sprintf_missing(sc: _Scanner, rw: Rewrite) -> None:
    toks = sc.tokens
    for i, tok in enumerate(toks):
        if tok.text != "sprintf" or (i and toks[i - 1].text == ".") or i + 1 >= len(toks):
            continue
        if toks[i + 1].text != "(":
            continue
        args = _split_args(sc, i + 1)
        if len(args) != 2 or args[0][1] - args[0][0] != 1 or toks[args[0][0]].kind != "str":
            continue
        a_start, a_end = args[1]
        if toks[a_start].text != "[" or sc.match.get(a_start) != a_end - 1:
            continue
        given = len(_split_args(sc, a_start))
        fmt_tok = toks[args[0][0]]
        verbs = _format_verbs(fmt_tok.text)
        if verbs is None:
            continue
        if len(verbs) < given or any(
            not _regorus_prints_like_go(fmt_tok.text[s:e]) for s, e, _ in verbs[:given]
        ):
            rw.replace(tok.start, tok.end, SPRINTF_NAME)  # regorus' sprintf would raise or print other text
        if len(verbs) <= given:
            continue
        text = fmt_tok.text
        for start, end, verb in reversed(verbs[given:]):
            text = text[:start] + f"%%!{verb}(MISSING)" + text[end:]
        rw.replace(fmt_tok.start, fmt_tok.end, text)


_RELATIONS = ("!=", "<=", ">=", "<", ">")


def _expression_end(sc: _Scanner, start: int) -> int:
    """Index one past the last token of the expression that starts at ``start`` in a body."""
    toks = sc.tokens
    j = start
    while j < len(toks):
        t = toks[j]
        if t.text == ";" or (t.kind == "op" and t.text in ")]}"):
            return j
        if j > start and toks[j - 1].line < t.line and _operand_end(toks[j - 1]) and t.text != "with":
            if not (t.kind == "op" and t.text in "+-*/%&|=!<>.,"):
                return j
        if t.kind == "op" and t.text in "([{" and j in sc.match:
            j = sc.match[j] + 1
            continue
        j += 1
    return j


def _is_plain(sc: _Scanner, start: int, end: int) -> bool:
    """A term OPA does not hoist: a literal scalar or a local variable (not a rule or an imported name)."""
    if end - start != 1:
        return False
    t = sc.tokens[start]
    return t.kind in ("num", "str") or (t.kind == "id" and t.text not in sc.documents)


def _ref_indexes(sc: _Scanner, start: int, end: int) -> list[tuple[int, int]]:
    """For a ref ``a.b[x].c[y]`` spanning [start, end): the index contents OPA hoists (not plain ones)."""
    toks = sc.tokens
    if toks[start].kind != "id":
        return []
    out: list[tuple[int, int]] = []
    j = start + 1
    while j < end:
        t = toks[j]
        if t.text == "." and j + 1 < end and toks[j + 1].kind == "id":
            j += 2
        elif t.text == "[" and sc.kind.get(j) == "index" and j in sc.match:
            close = sc.match[j]
            if close > end:
                return []
            if not _is_plain(sc, j + 1, close) and not (close - j == 2 and toks[j + 1].text == "_"):
                out.append((j + 1, close))
            j = close + 1
        else:
            return []
    return out


def _equality_side(sc: _Scanner, start: int, end: int) -> list[tuple[int, int]]:
    if start >= end:
        return []
    if _is_call_or_arith(sc, start, end):
        return [(start, end)]
    first = sc.tokens[start]
    if first.text in ("[", "{") and sc.match.get(start) == end - 1 and start not in sc.body_mode_from:
        return [(start, end)]
    return _ref_indexes(sc, start, end)


def _hoist_negations(sc: _Scanner, rw: Rewrite) -> None:
    toks = sc.tokens
    counter = 0
    for i, tok in enumerate(toks):
        if tok.text != "not" or tok.kind != "id" or (i and toks[i - 1].text == "."):
            continue
        if not sc.in_body(i):
            continue
        end = _expression_end(sc, i + 1)
        expr_end = end
        with_text = ""
        for j in range(i + 1, end):
            if toks[j].text == "with" and sc.enclosing(j) == sc.enclosing(i):
                expr_end = j
                with_text = " " + _one_line(toks[j:end], sc.source)
                break
        operands = _negated_call_args(sc, i + 1, expr_end)
        hoisted: list[str] = []
        for a_start, a_end in operands:
            if _is_plain(sc, a_start, a_end):
                continue
            counter += 1
            name = f"{HOIST_PREFIX}{counter}__"
            text = _one_line(toks[a_start:a_end], sc.source)
            lines = toks[a_end - 1].line - toks[a_start].line
            hoisted.append(f"{name} = {text}{with_text}; ")
            rw.replace(toks[a_start].start, toks[a_end - 1].end, name + "\n" * lines)
        if hoisted:
            rw.insert(tok.start, "".join(hoisted))


def _negated_call_args(sc: _Scanner, start: int, end: int) -> list[tuple[int, int]]:
    """The operands OPA evaluates before a ``not``: the arguments of a call ``f(a, b)`` or the sides of a
    comparison other than ``==``; for ``a == b`` (unification) only a side that is itself a call or an
    arithmetic expression. Empty for anything else (naked refs, literals)."""
    toks = sc.tokens
    # top-level operators between start and end
    rel: tuple[int, int, str] | None = None
    j = start
    depth_ops: list[int] = []
    while j < end:
        t = toks[j]
        if t.kind == "op" and t.text in "([{" and j in sc.match:
            j = sc.match[j] + 1
            continue
        if t.kind == "op":
            depth_ops.append(j)
        elif t.kind == "id" and t.text == "in" and j > start and toks[j - 1].text != ".":
            return [(start, j), (j + 1, end)]  # x in xs: a call of internal.member_2
        j += 1
    k = 0
    while k < len(depth_ops):
        j = depth_ops[k]
        t = toks[j]
        nxt = toks[j + 1] if j + 1 < end else None
        two = t.text + nxt.text if nxt is not None and nxt.start == t.end else t.text
        if two in ("==", "!=", "<=", ">=", ":="):
            if rel is None:
                rel = (j, j + 2, two)
            k += 2
            continue
        if t.text in ("<", ">", "="):
            if rel is None:
                rel = (j, j + 1, t.text)
        k += 1
    if rel is not None:
        left, right = (start, rel[0]), (rel[1], end)
        if rel[2] in ("==", "="):
            return _equality_side(sc, *left) + _equality_side(sc, *right)
        if rel[2] == ":=":
            return []
        return [left, right]
    # a call: path(args) covering the whole expression
    j = start
    if j >= end or toks[j].kind != "id":
        return []
    j += 1
    while j + 1 < end and toks[j].text == "." and toks[j + 1].kind == "id":
        j += 2
    if j < end and toks[j].text == "(" and sc.match.get(j) == end - 1:
        args = _split_args(sc, j)
        if j == start + 1 and toks[start].text == "equal" and len(args) == 2:  # equal(a, b) is a == b
            return _equality_side(sc, *args[0]) + _equality_side(sc, *args[1])
        return args
    return _ref_indexes(sc, start, end)


def _is_call_or_arith(sc: _Scanner, start: int, end: int) -> bool:
    toks = sc.tokens
    j = start
    while j < end:
        t = toks[j]
        if t.kind == "op" and t.text in "([{" and j in sc.match:
            if t.text == "(" and j > start and toks[j - 1].kind == "id":
                return True
            j = sc.match[j] + 1
            continue
        if t.kind == "op" and t.text in "+-*/%&|" and j > start:
            return True
        j += 1
    return False


def split_multi_body_rules(source: str) -> str:
    """Only the several-bodies rewrite (v0 ``head { a } { b }`` -> ``head { a } head { b }``)."""
    sc = _Scanner(source)
    rw = Rewrite(source)
    _split_bodies(sc, rw)
    return rw.apply()


def regorus_compatible(source: str, *, v0: bool) -> str:
    """Every rewrite above (the several-bodies one for v0 modules only). Lines never move."""
    sc = _Scanner(source)
    rw = Rewrite(source)
    if v0:
        _split_bodies(sc, rw)
    _paren_lines(sc, rw)
    _sprintf_missing(sc, rw)
    _hoist_negations(sc, rw)
    return rw.apply()


def original_column(original: str, rewritten: str, line: int, column: int) -> int:
    """The column in ``original`` of what regorus reports at ``line``:``column`` of ``rewritten`` (1-based).

    Rewrites never move lines but may insert text on one (a repeated head, hoisted arguments), which shifts
    the columns after it; text regorus reports inside an insertion maps to where it was inserted."""
    orig_lines, new_lines = original.splitlines(), rewritten.splitlines()
    if not (0 < line <= len(orig_lines) and line <= len(new_lines)) or column <= 0:
        return column
    before, after = orig_lines[line - 1], new_lines[line - 1]
    if before == after:
        return column
    index = column - 1
    for tag, i1, _i2, j1, j2 in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes():
        if j1 <= index < j2 or (index >= j2 and j2 == len(after)):
            if tag == "equal":
                return i1 + (index - j1) + 1
            return i1 + 1
    return column
