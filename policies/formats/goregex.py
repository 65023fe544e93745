"""Go's ``regexp`` for the admission policy languages: RE2 syntax and linear-time matching.

Kubernetes' CEL (``find``, ``findAll``, ``matches``: cel-go and Go's ``regexp``) and Kyverno's JMESPath
functions (``regex_match``, ``regex_replace_all``...) run Go regular expressions, which are RE2: no
backreferences, no look-around, and a match takes time linear in the text whatever the pattern. Python's
``re`` backtracks (``^(a+)+$`` on a long run of ``a`` takes exponential time), so a string in a rendered
object could hang the gate; this module runs the patterns on Google's RE2 (PyPI ``google-re2``) instead.

- :func:`compile` gives a compiled pattern (cached) or raises :class:`GoRegexError`, whose ``reason`` is
  Go's wording (``error parsing regexp: invalid escape sequence: `\\1```); patterns Go refuses (``\\1``,
  ``(?=``, ``(?<=``) are refused here too.
- :func:`search`, :func:`find_all`, :func:`replace_all` work as Go's ``FindString``/``MatchString``,
  ``FindAllString`` (an empty match right after a match is skipped) and ``ReplaceAllString`` (``$1``,
  ``${name}``, ``$$`` in the replacement) or ``ReplaceAllLiteralString``.

Texts are matched as UTF-8, as Go does; ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII, as in Go.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

__all__ = ["GoRegexError", "compile", "find_all", "fullmatch", "replace_all", "search"]

#: RE2's error codes in Go's ``regexp/syntax`` words.
_GO_WORDS = {
    "missing ]": "missing closing ]",
    "missing )": "missing closing )",
    "trailing \\": "trailing backslash at end of expression",
    "no argument for repetition operator": "missing argument to repetition operator",
    "invalid repetition size": "invalid repeat count",
    "bad repetition operator": "invalid nested repetition operator",
    "invalid perl operator": "invalid or unsupported Perl syntax",
    "invalid named capture group": "invalid named capture",
    "pattern too large - compile failed": "expression too large",
    "pattern too large - reverse compile failed": "expression too large",
}


class GoRegexError(ValueError):
    """The pattern does not compile; ``reason`` reads as Go's error (``error parsing regexp: ...``)."""

    def __init__(self, reason: str, pattern: str) -> None:
        self.reason = reason
        self.pattern = pattern
        super().__init__(reason)


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the error is raised, not written to stderr
    return options


_OPTIONS = _options()


def _go_reason(raw: str, pattern: str) -> str:
    code, sep, arg = raw.partition(": ")
    if not sep and code.startswith("trailing"):
        code, arg = "trailing \\", ""
    if code == "invalid perl operator" and arg.startswith("(?<"):
        # Go reads (?< as the start of a named group (?<name>): look-behind is an invalid name, the
        # fragment up to the first > (or the rest of the pattern)
        rest = pattern[max(pattern.find(arg), 0) :]
        end = rest.find(">")
        return f"error parsing regexp: invalid named capture: `{rest if end < 0 else rest[: end + 1]}`"
    return f"error parsing regexp: {_GO_WORDS.get(code, code)}: `{arg}`"


@lru_cache(maxsize=1024)
def compile(pattern: str) -> Any:
    """The compiled pattern (on UTF-8 bytes), or :class:`GoRegexError` in Go's words."""
    if "\\C" in pattern.replace("\\\\", ""):
        # RE2 takes \C (any byte); Go's parser refuses it
        raise GoRegexError("error parsing regexp: invalid escape sequence: `\\C`", pattern)
    try:
        return re2.compile(pattern.encode("utf-8", "surrogatepass"), _OPTIONS)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else ""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        raise GoRegexError(_go_reason(text, pattern), pattern) from None


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def _rune_width(data: bytes, pos: int) -> int:
    lead = data[pos]
    if lead < 0x80:
        return 1
    if lead >= 0xF0:
        return 4
    if lead >= 0xE0:
        return 3
    return 2


def search(pattern: str, text: str) -> str | None:
    """The leftmost match (Go's ``FindString``; ``None``: no match, as ``MatchString`` false)."""
    m = compile(pattern).search(_encode(text))
    return None if m is None else _decode(m.group(0))


def fullmatch(pattern: str, text: str) -> bool:
    """Whether the whole text matches (the pattern anchored at both ends)."""
    return compile(pattern).fullmatch(_encode(text)) is not None


def _matches(pattern: str, data: bytes, n: int = -1) -> list[Any]:
    """Go's ``allMatches``: successive non-overlapping matches; an empty match abutting the previous match
    is ignored; at most ``n`` (all when negative)."""
    regex = compile(pattern)
    out: list[Any] = []
    pos, end, prev_end = 0, len(data), -1
    while (n < 0 or len(out) < n) and pos <= end:
        m = regex.search(data, pos)
        if m is None:
            break
        start, stop = m.span()
        accept = True
        if stop == pos:  # an empty match: step over one character
            if start == prev_end:
                accept = False
            pos = pos + _rune_width(data, pos) if pos < end else end + 1
        else:
            pos = stop
        prev_end = stop
        if accept:
            out.append(m)
    return out


def find_all(pattern: str, text: str, n: int = -1) -> list[str]:
    """Go's ``FindAllString(text, n)``."""
    return [_decode(m.group(0)) for m in _matches(pattern, _encode(text), n)]


def _expand(template: str, m: Any, names: dict[str, int]) -> str:
    """Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``; ``$$`` is a dollar; a reference to
    no group is empty; a malformed ``$`` stays as it is."""
    out: list[str] = []
    rest = template
    while True:
        before, dollar, rest = rest.partition("$")
        out.append(before)
        if not dollar:
            return "".join(out)
        if rest.startswith("$"):
            out.append("$")
            rest = rest[1:]
            continue
        brace = rest.startswith("{")
        body = rest[1:] if brace else rest
        i = 0
        while i < len(body) and (body[i].isalnum() or body[i] == "_"):
            i += 1
        name = body[:i]
        if not name or (brace and not body[i:].startswith("}")):
            out.append("$")
            continue
        rest = body[i + 1 :] if brace else body[i:]
        index = int(name) if name.isdigit() and len(name) < 9 else names.get(name, -1)
        if 0 <= index <= m.re.groups and m.group(index) is not None:
            out.append(_decode(m.group(index)))


def replace_all(pattern: str, text: str, repl: str, literal: bool = False) -> str:
    """Go's ``ReplaceAllString`` (``repl`` expanded per match) or ``ReplaceAllLiteralString``."""
    data = _encode(text)
    names = {(k.decode() if isinstance(k, bytes) else k): v for k, v in compile(pattern).groupindex.items()}
    out: list[str] = []
    last = 0
    for m in _matches(pattern, data):
        start, stop = m.span()
        out.append(_decode(data[last:start]))
        out.append(repl if literal else _expand(repl, m, names))
        last = stop
    out.append(_decode(data[last:]))
    return "".join(out)
