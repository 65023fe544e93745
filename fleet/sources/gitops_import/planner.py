"""From YAML documents to a Plan: read each file, send each object to its tool's parser, then decide which
of the settings that need mapping fields exist in this Fleetgate (others are "not yet expressible")."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from fleet.sources.render import RenderError
from fleet.sources.render.yamlsafe import load_documents

from .argocd import parse_application, parse_applicationset
from .environment import Environment
from .flux import FluxDocuments
from .model import ImportError_, Plan, Source
from .rancher import parse_gitrepo

log = logging.getLogger(__name__)

# (API group, kind) the import reads.
KINDS: dict[tuple[str, str], str] = {
    ("fleet.cattle.io", "GitRepo"): "fleet",
    ("argoproj.io", "Application"): "argocd",
    ("argoproj.io", "ApplicationSet"): "argocd",
    ("source.toolkit.fluxcd.io", "GitRepository"): "flux",
    ("source.toolkit.fluxcd.io", "HelmRepository"): "flux",
    ("source.toolkit.fluxcd.io", "OCIRepository"): "flux",
    ("source.toolkit.fluxcd.io", "HelmChart"): "flux",
    ("source.toolkit.fluxcd.io", "Bucket"): "flux",
    ("kustomize.toolkit.fluxcd.io", "Kustomization"): "flux",
    ("helm.toolkit.fluxcd.io", "HelmRelease"): "flux",
}

# Settings a parser puts in MappingSpec.options, and the PathMapping fields that can hold them (the first
# that exists is used); other engineers add these fields (issue 15), so this is checked at each import.
OPTION_FIELDS: dict[str, tuple[str, ...]] = {
    "recurse": ("directory_recurse", "recurse"),
    "include": ("directory_include", "include"),
    "exclude": ("directory_exclude", "exclude"),
    "release_name": ("release_name", "helm_release_name"),
    "value_files": ("values_files", "value_files", "helm_values_files"),
    "chart": ("helm_chart",),
    "chart_repo": ("helm_repo",),
    "chart_version": ("helm_version",),
    "force_namespace": ("force_namespace", "namespace_forced"),
    "create_namespace": ("create_namespace",),
    "namespace_labels": ("namespace_labels",),
    "namespace_annotations": ("namespace_annotations",),
}
OPTION_SETTINGS = {
    "recurse": "directory recurse (Argo CD reads only the top directory unless recurse is on)",
    "include": "directory include glob",
    "exclude": "directory exclude glob",
    "release_name": "Helm release name",
    "value_files": "Helm value files",
    "chart": "chart from a Helm repository or OCI registry",
    "chart_repo": "chart repository",
    "chart_version": "chart version",
    "force_namespace": "targetNamespace forced onto every namespaced object",
    "create_namespace": "create the target namespace",
    "namespace_labels": "labels of the created namespace",
    "namespace_annotations": "annotations of the created namespace",
}


def option_field(option: str) -> str | None:
    from fleet.sources.models import PathMapping

    names = {f.name for f in PathMapping._meta.get_fields()}
    return next((f for f in OPTION_FIELDS.get(option, ()) if f in names), None)


def read_documents(files: Sequence[tuple[str, str | bytes]]
                   ) -> tuple[list[tuple[dict[str, Any], Source]], list[tuple[Source, str]]]:
    """Every object of ``files`` ((name, content) pairs) with its source; ImportError_ (400) for malformed
    YAML, a document that is not an object, or a kind the import does not read, naming file and line."""
    found: list[tuple[dict[str, Any], Source]] = []
    errors: list[str] = []
    notes: list[tuple[Source, str]] = []
    for name, content in files:
        try:
            docs = load_documents(content, file=name)
        except RenderError as exc:
            where = f"{name}:{exc.line}" if exc.line else name
            errors.append(f"{where}: {exc.message}")
            continue
        for doc in docs:
            if doc.data is None:
                continue
            where = f"{name}:{doc.line}"
            data = doc.data
            if not isinstance(data, dict) or not data.get("kind") or not data.get("apiVersion"):
                errors.append(f"{where}: not a Kubernetes object (apiVersion and kind are needed)")
                continue
            group = str(data["apiVersion"]).rpartition("/")[0]
            if (group, str(data["kind"])) not in KINDS:
                errors.append(f"{where}: unknown kind {data['kind']} ({data['apiVersion']}): the import "
                              "reads Fleet GitRepo, Argo CD Application/ApplicationSet and Flux "
                              "GitRepository, Kustomization and HelmRelease")
                continue
            meta = data.get("metadata") or {}
            if not isinstance(meta, dict) or not meta.get("name"):
                errors.append(f"{where}: {data['kind']} without metadata.name")
                continue
            found.append((data, Source(str(data["kind"]), str(meta["name"]), name, line=doc.line)))
            for key in ("finalizers", "labels", "annotations"):
                if meta.get(key):
                    notes.append((found[-1][1], key))
    if errors:
        raise ImportError_("; ".join(errors[:20]), field="documents", errors=errors)
    if not found:
        raise ImportError_("no documents to import", field="documents")
    return found, notes


def make_plan(files: Sequence[tuple[str, str | bytes]], env: Environment) -> Plan:
    plan = Plan()
    flux = FluxDocuments()
    documents, notes = read_documents(files)
    for src, key in notes:
        plan.note(src, f"metadata.{key}", "metadata of the source object itself; nothing is deployed from it")
    for data, src in documents:
        group = str(data["apiVersion"]).rpartition("/")[0]
        tool = KINDS[(group, src.kind)]
        with _malformed(src):
            if tool == "fleet":
                parse_gitrepo(data, src, env, plan)
            elif src.kind == "Application":
                parse_application(data, src, env, plan)
            elif tool == "argocd":
                parse_applicationset(data, src, env, plan)
            else:
                flux.add(data, src)
    with _malformed(None, sorted({src.file for data, src in documents if KINDS.get(
            (str(data["apiVersion"]).rpartition("/")[0], src.kind)) == "flux"})):
        flux.plan(env, plan)
    _resolve_options(plan)
    return plan


@contextmanager
def _malformed(src: Source | None, files: Sequence[str] = ()) -> Iterator[None]:
    """The parsers check the shapes they read (``model.as_object``, ``as_list``) and name the setting; a shape
    none of them checks still answers 400 naming the file and the document (or the Flux documents), never
    500. Logged, since it means a check is missing."""
    try:
        yield
    except ImportError_:
        raise
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        log.warning("import: unchecked document shape", exc_info=True)
        where = src.at() if src is not None else f"{', '.join(files)}: the Flux documents"
        raise ImportError_(f"{where}: malformed document: a setting has the wrong type "
                           f"({type(exc).__name__}: {str(exc)[:200]})", field="documents") from None


def _resolve_options(plan: Plan) -> None:
    for mapping in plan.mappings:
        for option, value in list(mapping.options.items()):
            if option_field(option) is None:
                del mapping.options[option]
                plan.unsupported_(mapping.source, OPTION_SETTINGS.get(option, option),
                                  f"not yet expressible: {value!r} (mapping {mapping.name!r} renders "
                                  "without it)")
