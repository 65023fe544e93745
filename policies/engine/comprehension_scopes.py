"""A comprehension that re-declares an outer variable: OPA's scoping, spelled out for regorus.

In OPA, ``x := ...`` inside a comprehension declares a variable local to the comprehension; an ``x`` used in
that comprehension *before* the declaration still names the enclosing rule's ``x``, and the head and the
uses after it name the local one. conftest's own combine example relies on it::

    name := input[_].contents.metadata.name
    occurrences := [name | some i; input[i].contents.metadata.name == name; name := input[i].metadata.name]

regorus treats every ``name`` of the comprehension as the local one and refuses the module ("var `name`
used before definition"). :func:`rename_shadowing_locals` renames the local (the declaration, the uses after
it and the head) to ``__fg_<name>``, which is what OPA means; line numbers do not move. Nothing else changes.
"""

from __future__ import annotations

from policies.engine.source import Token, _code_tokens

PREFIX = "__fg_"


def _comprehensions(tokens: list[Token]) -> list[tuple[int, int, int]]:
    """(open, bar, close) token indices of each ``[ head | body ]`` / ``{ head | body }``, innermost first."""
    out: list[tuple[int, int, int]] = []
    stack: list[tuple[int, int | None]] = []  # (open index, index of a `|` at this level)
    for idx, tok in enumerate(tokens):
        if tok.kind != "op":
            continue
        if tok.text in "([{":
            stack.append((idx, None))
        elif tok.text == "|" and stack and stack[-1][1] is None and tokens[stack[-1][0]].text in "[{":
            stack[-1] = (stack[-1][0], idx)
        elif tok.text in ")]}" and stack:
            start, bar = stack.pop()
            if bar is not None:
                out.append((start, bar, idx))
    return out


def _is_var(tokens: list[Token], idx: int) -> bool:
    tok = tokens[idx]
    if tok.kind != "id":
        return False
    if idx and tokens[idx - 1].text == ".":
        return False  # a field: x.name
    nxt = tokens[idx + 1] if idx + 1 < len(tokens) else None
    after = tokens[idx + 2] if idx + 2 < len(tokens) else None
    return not (nxt is not None and nxt.text == ":" and not (after is not None and after.text == "="))


def _rule_starts(tokens: list[Token]) -> list[int]:
    """For each token, the index of the first token of the top-level statement it belongs to."""
    out: list[int] = []
    depth = 0
    start = 0
    prev_line = 0
    for idx, tok in enumerate(tokens):
        if depth == 0 and tok.line != prev_line and tok.kind == "id":
            start = idx
        prev_line = tok.line
        if tok.kind == "op":
            if tok.text in "([{":
                depth += 1
            elif tok.text in ")]}":
                depth = max(0, depth - 1)
        out.append(start)
    return out


def _declaration(tokens: list[Token], idx: int) -> str:
    """``"some"`` for ``some v`` (v at idx), ``":="`` for ``v :=``, else ``""``."""
    if not _is_var(tokens, idx):
        return ""
    if idx and tokens[idx - 1].text == "some" and tokens[idx - 1].kind == "id":
        return "some"
    if (
        idx + 2 < len(tokens)
        and tokens[idx + 1].text == ":"
        and tokens[idx + 2].text == "="
        and tokens[idx + 1].end == tokens[idx + 2].start
    ):
        return ":="
    return ""


def _unbound_some(tokens: list[Token], rule_start: list[int], renames: dict[int, str]) -> None:
    """``some v`` in a rule body where ``v`` is only ever used inside comprehensions: OPA binds nothing
    outside, so each comprehension has its own ``v``; regorus shares one and fails the second binding
    ("duplicated definition of local variable"). Give each outermost comprehension its own name, and make
    the outer ``some v`` a ``true`` (same line)."""
    comps = _comprehensions(tokens)
    inside: dict[int, int] = {}  # token index -> its outermost comprehension's open index
    for start, _bar, end in sorted(comps, key=lambda c: c[2] - c[0], reverse=True):
        for j in range(start, end + 1):
            inside.setdefault(j, start)
    for idx, tok in enumerate(tokens):
        if not (tok.kind == "id" and tok.text == "some" and idx not in inside and idx + 1 < len(tokens)):
            continue
        var = tokens[idx + 1]
        if var.kind != "id" or (idx + 2 < len(tokens) and tokens[idx + 2].text in (",", "in")):
            continue
        rule = rule_start[idx]
        same_rule = [j for j in range(rule, len(tokens)) if rule_start[j] == rule]
        uses = [j for j in same_rule if j != idx + 1 and tokens[j].text == var.text and _is_var(tokens, j)]
        if not uses or any(j not in inside for j in uses):
            continue
        for j in uses:
            if j not in renames:
                renames[j] = f"{PREFIX}{var.text}_{inside[j]}"
        renames[idx] = "true"  # the outer declaration now declares nothing (regorus refuses an unused one)
        renames[idx + 1] = ""


def rename_shadowing_locals(source: str) -> str:
    tokens = _code_tokens(source)
    rule_start = _rule_starts(tokens)
    renames: dict[int, str] = {}  # token index -> new text
    for start, bar, end in _comprehensions(tokens):
        for idx in range(bar + 1, end):
            kind = _declaration(tokens, idx)
            if not kind:
                continue
            name = tokens[idx].text

            def used(lo: int, hi: int, name: str = name) -> bool:
                return any(tokens[j].text == name and _is_var(tokens, j) for j in range(lo, hi))

            # a use before the declaration in the comprehension names the outer variable (OPA's scoping);
            # `some v` in a comprehension whose rule already has a v declares a new one (regorus refuses it)
            shadows = used(bar + 1, idx) or (kind == "some" and used(rule_start[start], start))
            if not shadows:
                continue
            for j in [*range(start + 1, bar), *range(idx, end)]:
                if j not in renames and tokens[j].text == name and _is_var(tokens, j):
                    renames[j] = PREFIX + name
    _unbound_some(tokens, rule_start, renames)
    if not renames:
        return source
    out = []
    pos = 0
    for idx in sorted(renames):
        tok = tokens[idx]
        out.append(source[pos : tok.start])
        out.append(renames[idx])
        pos = tok.end
    out.append(source[pos:])
    return "".join(out)
