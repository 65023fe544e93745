"""The contract between the gate and the admission-style policy languages (ValidatingAdmissionPolicy,
Kyverno): what one object's review looks like to them, and what they report back.

The gate builds one :class:`AdmissionInput` per reviewed object (the apply's own operation on the target,
see ``policies.gate.RenderedObject``) and hands the whole list to a compiled policy's ``evaluate``; the
policy answers with :class:`Finding` values that point back into that list by ``index``. Evaluators are
pure (no Django, no I/O): anything they need from outside (``paramRef`` objects, the live namespace) comes
in through the input or a :data:`ParamsLookup` callable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.formats.kube import ObjectId

#: ``lookup(api_version, kind, namespace, name, selector)`` -> the matching objects (rendered for the
#: target first, then the target's live objects when the caller could read them). ``name`` or
#: ``selector`` (a ``metav1.LabelSelector`` mapping) narrows; ``namespace`` "" means cluster-scoped or any.
ParamsLookup = Callable[[str, str, str, str, Mapping[str, Any] | None], Sequence[Mapping[str, Any]]]


def no_params(
    api_version: str, kind: str, namespace: str, name: str, selector: Mapping[str, Any] | None
) -> Sequence[Mapping[str, Any]]:
    return ()


@dataclass(frozen=True)
class AdmissionInput:
    """One object's admission request as the apply will make it on the target."""

    operation: str  # "CREATE" | "UPDATE" | "DELETE"
    id: ObjectId  # identity of the subject (the rendered object, or the live one for a DELETE)
    object: Mapping[str, Any] | None  # None for a DELETE
    old_object: Mapping[str, Any] | None  # the live object for UPDATE and DELETE, else None
    namespace_object: Mapping[str, Any] | None = None  # the object's Namespace (rendered or live)
    user_info: Mapping[str, Any] = field(default_factory=dict)  # {"username": ..., "groups": [...]}
    source_file: str = ""
    #: what evaluators derive from this input once and share between the policies evaluated on it (e.g.
    #: Kyverno's request and JSON context); lives as long as the input (the gate's target), read-only data
    scratch: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def subject(self) -> Mapping[str, Any]:
        subject = self.object if self.object is not None else self.old_object
        assert subject is not None  # noqa: S101 - the gate never builds an input without either
        return subject


@dataclass(frozen=True)
class Finding:
    """One failed rule (or validation) of a policy on one input.

    ``action`` is the gate's enforcement for it: "deny" (blocks unless waived), "warn" or "dryrun"
    (recorded only); VAP ``validationActions`` and Kyverno ``failureAction`` map onto these.
    ``rule`` names what failed (Kyverno: the rule name; VAP: ``validations[i]`` or the binding's name).
    ``error`` marks a finding that is an evaluation failure (e.g. VAP ``failurePolicy: Fail``): it blocks
    like an engine error, whatever ``action`` says."""

    index: int
    rule: str
    message: str
    action: str = "deny"
    details: Mapping[str, Any] = field(default_factory=dict)
    error: bool = False
