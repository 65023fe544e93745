"""Differential test: ``orValue()`` on a value that is not optional, the gate against the real kube-apiserver.

kyverno/policies ``other-cel/ensure-readonly-hostpath`` writes ``container.volumeMounts.orValue([])`` on a
plain list, and its kyverno-test expects the pod whose mounts are all read-only to pass: cel-go up to 0.27
handed a receiver that is not optional back unchanged. Since cel-go 0.28 (google/cel-go#1276) the call is
the error "no such overload", its argument unevaluated; the API server of the test suite (Kubernetes 1.37.2,
cel-go 0.29.2) is the judge of what the gate does, with the policy's own expression. Kyverno today builds
with a newer cel-go still (0.31), so it answers as the API server does.
"""

from __future__ import annotations

import json

from policies.formats.admission import AdmissionInput
from policies.formats.kube import object_id
from policies.formats.vap import compile, parse_binding, parse_policy
from tests.kube_backends import KubeApiServer, kube_apiserver, kube_apiserver_bin_dir  # noqa: F401
from tests.policies.test_vap_differential import (
    Case,
    _documents,
    _server_answers,
    _subject,
    namespaces,
)

__all__ = ["namespaces"]  # the fixture: two namespaces on the API server

# (expression, data): the ConfigMap's data stands for one volume mount of one container
MOUNTS = "dyn([{'volumeMounts': [object.data]}])"
CASES = [
    # the shape of the Kyverno policy's expression (its containers are dyn, from the object)
    (
        MOUNTS + ".all(container, container.volumeMounts.orValue([])"
        ".all(volume, volume.?readOnly.orValue('') == 'true'))",
        {"name": "foo", "readOnly": "true"},
    ),
    ("object.data.orValue({}) == {}", {"x": "1"}),
    ("object.data.x.orValue('') == '1'", {"x": "1"}),
    # the optional forms it should have used work on both
    (
        MOUNTS + ".all(container, container.?volumeMounts.orValue([])"
        ".all(volume, volume.?readOnly.orValue('') == 'true'))",
        {"name": "foo", "readOnly": "true"},
    ),
    ("object.?data.?missing.orValue('none') == 'none'", {"x": "1"}),
]


def test_or_value_on_a_value_that_is_not_optional_is_no_such_overload_as_on_the_api_server(
    kube_apiserver: KubeApiServer,  # noqa: F811 - the fixture imported above
    namespaces: dict[str, str],
) -> None:
    cases = [Case(f"orv-{i}", [{"expression": e}], data) for i, (e, data) in enumerate(CASES)]
    refused, answers = _server_answers(kube_apiserver, namespaces["prod"], cases)
    assert refused == []
    ns_obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespaces["prod"]}}
    ours: dict[str, str | None] = {}
    for case in cases:
        policy, binding = _documents(case, "x")
        subject = _subject(case, namespaces["prod"], case.data)
        item = AdmissionInput("CREATE", object_id(subject), subject, None, ns_obj)
        findings = compile(parse_policy(policy), parse_binding(binding)).evaluate([item])
        ours[case.id] = findings[0].message if findings else None
    mismatches = [
        (case.validations[0]["expression"], answers[case.id], ours[case.id])
        for case in cases
        if (answers[case.id] is None) != (ours[case.id] is None)
        or (ours[case.id] is not None and ours[case.id] not in str(answers[case.id]))
    ]
    assert mismatches == [], json.dumps(mismatches, indent=1)
    # the first three are errors ("no such overload") on both, the optional forms pass on both
    assert [ours[c.id] is None for c in cases] == [False, False, False, True, True]
    assert all("resulted in error: no such overload" in str(ours[c.id]) for c in cases[:3])
