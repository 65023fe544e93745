"""The API schema says exactly what the API accepts for a mapping's directory include/exclude glob and for a
GitOps import (schemathesis found a generated glob the validator refused, and an empty import body).

The glob's pattern is read from the published schema and compared with the serializer field the API runs
(white space trimmed, then Argo CD's glob syntax checked by ``plain.validate_glob``) on generated strings made
of the characters that matter: escapes, classes, braces, white space, newlines."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from fleet.sources.api.serializers import PathMappingSerializer


@cache
def schema() -> dict[str, Any]:
    document = SchemaGenerator().get_schema(request=None, public=True)
    return dict(json.loads(json.dumps(document, default=str))["components"]["schemas"])


@cache
def glob_pattern() -> re.Pattern[str]:
    field = schema()["PatchedPathMappingRequest"]["properties"]["directory_include"]
    exclude = schema()["PatchedPathMappingRequest"]["properties"]["directory_exclude"]
    assert field["oneOf"] == exclude["oneOf"]
    [glob, blank] = field["oneOf"]
    assert blank == {"type": "string", "maxLength": 0}
    assert glob["maxLength"] == 1000
    return re.compile(glob["pattern"])


def in_schema(value: str) -> bool:
    return value == "" or (len(value) <= 1000 and bool(glob_pattern().search(value)))


def accepted(value: str) -> bool:
    field = PathMappingSerializer().fields["directory_include"]
    try:
        field.run_validation(value)
    except serializers.ValidationError:
        return False
    return True


GLOB_CHARACTERS = st.sampled_from(list("ab*?,!-/.\\[]{} \t\n\r\x85\u3000"))


@given(st.text(GLOB_CHARACTERS, max_size=20))
@settings(max_examples=3000, derandomize=True, deadline=None, database=None)
def test_the_schema_pattern_allows_exactly_the_globs_the_api_accepts(value: str) -> None:
    assert in_schema(value) == accepted(value), value


@pytest.mark.parametrize(("value", "ok"), [
    ("{a.yaml,b/*.yaml}", True),
    ("  *.y*ml\n", True),  # trimmed, as every text field of the API
    ("[!a-c]*.yaml", True),
    ("\\{literal\\}.yaml", True),
    ("{a,{b,{c,d}}}", True),
    ("{a,{b,{c,{d,e}}}}", False),  # braces nested more than three deep
    ("\u009b\u6157\u0004\u00e3\u00c4\U000727bagB\U0005ce2b[", False),  # schemathesis' find: '[' not closed
    ("a}", False),
    ("{a", False),
    ("[]", False),
    ("a\nb", False),
    ("x" * 1001, False),
])
def test_examples_agree(value: str, ok: bool) -> None:
    assert (in_schema(value), accepted(value)) == (ok, ok)


def test_a_glob_nested_too_deep_is_refused_with_a_message() -> None:
    field = PathMappingSerializer().fields["directory_exclude"]
    with pytest.raises(serializers.ValidationError, match="braces nested more than 3 deep"):
        field.run_validation("{a,{b,{c,{d,e}}}}")


def test_the_gitops_import_schema_needs_documents_or_files() -> None:
    body = schema()["GitOpsImportRequest"]
    assert body["anyOf"] == [
        {"required": ["documents"], "properties": {"documents": {"minLength": 1}}},
        {"required": ["files"], "properties": {"files": {"minItems": 1}}},
    ]
    assert body["properties"]["files"]["maxItems"] == 50


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field"), [
    ({}, "documents"),
    ({"documents": "", "files": []}, "documents"),
    ({"files": [{"name": f"f{i}.yaml", "content": "a: b\n"} for i in range(51)]}, "files"),
])
def test_an_import_without_documents_or_with_too_many_files_is_400(admin_client: Any, body: dict[str, Any],
                                                                   field: str) -> None:
    answer = admin_client.post("/api/import/gitops/", body, format="json")
    assert answer.status_code == 400
    assert field in answer.json()
