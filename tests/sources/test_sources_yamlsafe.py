"""The safe YAML loader: both the libyaml-backed loader and the pure-Python one enforce the limits."""

from __future__ import annotations

import pytest
import yaml

from fleet.sources.render.errors import RenderError
from fleet.sources.render.yamlsafe import FastLoader, LimitedSafeLoader, load_documents, load_one


def billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("loader", [FastLoader, LimitedSafeLoader])
@pytest.mark.parametrize(("text", "message"), [
    (billion_laughs(), "YAML bomb"),
    ("a: &a [*a]\n", "recursive alias"),
    ("x: &x 1\n" + "".join(f"k{i}: *x\n" for i in range(101)), "more than 100 aliases"),
])
def test_alias_bombs_are_refused_while_composing(loader: type, text: str, message: str) -> None:
    with pytest.raises(yaml.MarkedYAMLError, match=message):
        list(yaml.load_all(text, Loader=loader))  # the safe loaders under test


def test_documents_keep_json_compatible_values_and_lines() -> None:
    docs = load_documents("a: 2026-01-01\nb: !!binary aGVsbG8=\n80: http\n---\n\n---\nc: 1\n", file="f.yaml")
    assert [(d.index, d.line) for d in docs] == [(0, 1), (1, 6), (2, 7)]
    assert docs[0].data == {"a": "2026-01-01", "b": "aGVsbG8=", "80": "http"}
    assert docs[1].data is None


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("a: 1\nb: [1\n", 3, "invalid YAML"),
    ("a: 1\nb:\n  c: 1\n  c: 2\n", 4, "duplicate key 'c'"),
    ("? [a]\n: 1\n", 1, "mapping keys must be scalars"),
    ("s: !!set {a, b}\n", 1, "not supported"),
    ("t: !!python/object:os.system x\n", 1, "could not determine a constructor"),
])
def test_errors_carry_file_and_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(RenderError) as err:
        load_documents(text, file="x/y.yaml")
    assert err.value.file == "x/y.yaml" and err.value.line == line
    assert fragment in err.value.message


def test_size_limits_and_single_document_files() -> None:
    with pytest.raises(RenderError, match="more than the limit"):
        load_documents("a: " + "x" * 100, file="f", max_bytes=50)
    with pytest.raises(RenderError, match="document is larger"):
        load_documents("a: " + "x" * 100 + "\n---\nb: 1\n", file="f", max_document_bytes=50)
    with pytest.raises(RenderError, match="single YAML document"):
        load_one("a: 1\n---\nb: 2\n", file="values.yaml")
    with pytest.raises(RenderError, match="not UTF-8"):
        load_documents(b"a: \xff\xfe\n", file="f")
