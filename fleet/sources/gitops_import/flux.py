"""Flux ``GitRepository`` + ``Kustomization`` / ``HelmRelease`` -> repositories and mappings.

Flux runs inside the cluster it deploys to, so its objects name no cluster: every mapping goes to the
target group given with the import. Semantics as Flux's API documents them: a GitRepository follows
``ref.branch`` (default ``master``); a Kustomization builds ``path`` (default the root) of its source, then
substitutes ``postBuild`` variables (render/postbuild.py); ``dependsOn`` names Kustomizations (or
HelmReleases) of the same namespace unless one is given; a HelmRelease's release name defaults to
``[<targetNamespace>-]<name>`` and its namespace to ``targetNamespace`` or its own namespace."""

from __future__ import annotations

from typing import Any

from .environment import Environment
from .model import GroupSpec, MappingSpec, Plan, RepositorySpec, Source, slug, walk_unknown

GITREPO_SPEC = {"url", "ref", "secretRef", "interval", "timeout", "verify"}
KUSTOMIZATION_SPEC = {"sourceRef", "path", "targetNamespace", "postBuild", "dependsOn", "prune", "suspend",
                      "interval", "retryInterval", "timeout", "wait"}
HELMRELEASE_SPEC = {"chart", "releaseName", "targetNamespace", "values", "valuesFrom", "dependsOn",
                    "suspend", "interval", "timeout"}
SCHEDULING = ("interval", "retryInterval", "timeout")


class FluxDocuments:
    """Flux objects refer to each other by namespace and name: collected first, planned together."""

    def __init__(self) -> None:
        self.sources: dict[tuple[str, str, str], tuple[dict[str, Any], Source]] = {}
        self.workloads: list[tuple[dict[str, Any], Source]] = []

    def add(self, doc: dict[str, Any], src: Source) -> None:
        if src.kind in ("GitRepository", "HelmRepository", "OCIRepository", "Bucket", "HelmChart",
                        "ExternalArtifact"):
            self.sources[(src.kind, _ns(doc), src.name)] = (doc, src)
        else:
            self.workloads.append((doc, src))

    def plan(self, env: Environment, plan: Plan) -> None:
        for (kind, _, _), (doc, src) in sorted(self.sources.items()):
            if kind == "GitRepository":
                self._gitrepository(doc, src, plan)
            else:
                plan.unsupported_(src, "kind", f"a {kind} source is not imported on its own: charts from "
                                  "Helm or OCI repositories are not yet expressible as a mapping")
        if self.workloads and not env.target_group:
            for _, src in self.workloads:
                plan.skip(src, "metadata", "Flux objects name no cluster: give the target group "
                          "(--group / \"group\")")
            return
        if not self.workloads:
            return
        group = plan.add_group(GroupSpec(env.target_group, existing=True))
        for doc, src in self.workloads:
            if src.kind == "Kustomization":
                self._kustomization(doc, src, group, plan)
            else:
                self._helmrelease(doc, src, group, plan)

    # ----------------------------------------------------------------- sources

    def _branch(self, doc: dict[str, Any], src: Source, plan: Plan) -> str:
        ref = (doc.get("spec") or {}).get("ref") or {}
        for key in ("tag", "semver", "name", "commit"):
            if ref.get(key):
                plan.unsupported_(src, f"spec.ref.{key}", f"pinned to {ref[key]!r}: Fleetgate follows the "
                                  f"head of a branch; imported as branch {ref.get('branch') or 'master'!r}")
        return str(ref.get("branch") or "master")

    def _gitrepository(self, doc: dict[str, Any], src: Source, plan: Plan) -> RepositorySpec | None:
        spec = doc.get("spec") or {}
        walk_unknown(plan, src, spec, GITREPO_SPEC, "spec")
        if not spec.get("url"):
            plan.skip(src, "spec.url", "a GitRepository needs spec.url")
            return None
        secret = (spec.get("secretRef") or {}).get("name")
        if secret:
            plan.secret(src, "spec.secretRef", str(secret), "git credentials (set a token or SSH key on the "
                        "repository)")
        verify = spec.get("verify") or {}
        if verify:
            plan.unsupported_(src, "spec.verify", "commit verification keys live in a Secret: set the "
                              "repository's trusted keys and verification_mode in Fleetgate")
            if (verify.get("secretRef") or {}).get("name"):
                plan.secret(src, "spec.verify.secretRef", str(verify["secretRef"]["name"]),
                            "trusted public keys")
        poll = None
        if spec.get("interval"):
            from .rancher import _seconds

            poll = _seconds(spec["interval"])
        return plan.add_repository(RepositorySpec(slug(src.name), str(spec["url"]),
                                                  self._branch(doc, src, plan), poll, str(src)))

    def _source(self, ref: Any, doc: dict[str, Any], src: Source, plan: Plan, where: str
                ) -> RepositorySpec | None:
        if not isinstance(ref, dict) or not ref.get("name"):
            plan.skip(src, where, "no sourceRef")
            return None
        kind = str(ref.get("kind") or "GitRepository")
        key = (kind, str(ref.get("namespace") or _ns(doc)), str(ref["name"]))
        if kind != "GitRepository":
            plan.skip(src, where, f"source kind {kind}: not yet expressible as a mapping (only a Git "
                      "repository's path is)")
            return None
        if key not in self.sources:
            plan.skip(src, where, f"GitRepository {key[1]}/{key[2]} is not among the imported documents")
            return None
        sdoc, ssrc = self.sources[key]
        return self._gitrepository(sdoc, ssrc, plan)

    # ----------------------------------------------------------------- workloads

    def _common(self, spec: dict[str, Any], src: Source, mapping: MappingSpec, doc: dict[str, Any],
                plan: Plan) -> None:
        for key, use in (("decryption", "decryption keys (SOPS)"),
                         ("kubeConfig", "a remote cluster's kubeconfig")):
            ref = (spec.get(key) or {}).get("secretRef") if isinstance(spec.get(key), dict) else None
            if isinstance(ref, dict) and ref.get("name"):
                plan.secret(src, f"spec.{key}.secretRef", str(ref["name"]), use)
        for key in SCHEDULING:
            if key in spec:
                plan.note(src, f"spec.{key}", "Fleetgate renders every new commit and waits for health by "
                          "the group's settings; not needed")
        if spec.get("suspend"):
            mapping.enabled = False
            plan.note(src, "spec.suspend", "imported as a disabled mapping")
        for i, dep in enumerate(spec.get("dependsOn") or []):
            if not isinstance(dep, dict) or not dep.get("name"):
                plan.unsupported_(src, f"spec.dependsOn[{i}]", "a dependency needs a name")
                continue
            if dep.get("namespace") and dep["namespace"] != _ns(doc):
                plan.note(src, f"spec.dependsOn[{i}]", f"namespace {dep['namespace']!r} dropped: mappings "
                          "are named per repository")
            mapping.depends_on.append(slug(str(dep["name"])))

    def _kustomization(self, doc: dict[str, Any], src: Source, group: GroupSpec, plan: Plan) -> None:
        spec = doc.get("spec") or {}
        walk_unknown(plan, src, spec, KUSTOMIZATION_SPEC, "spec")
        repo = self._source(spec.get("sourceRef"), doc, src, plan, "spec.sourceRef")
        if repo is None:
            return
        path = str(spec.get("path") or ".").strip()
        path = (path[2:] if path.startswith("./") else path).strip("/") or "."
        mapping = MappingSpec(slug(src.name), repo.name, path, group.name, source=str(src))
        if spec.get("targetNamespace"):
            mapping.target_namespace = str(spec["targetNamespace"])
            mapping.options["force_namespace"] = True
        post = spec.get("postBuild") or {}
        if isinstance(post, dict) and post:
            walk_unknown(plan, src, post, {"substitute", "substituteFrom"}, "spec.postBuild")
            mapping.postbuild = {str(k): str(v) for k, v in (post.get("substitute") or {}).items()}
            for i, ref in enumerate(post.get("substituteFrom") or []):
                kind, name = str(ref.get("kind")), str(ref.get("name"))
                if kind == "Secret":
                    plan.secret(src, f"spec.postBuild.substituteFrom[{i}]", name, "substitution variables")
                plan.unsupported_(src, f"spec.postBuild.substituteFrom[{i}]", f"{kind} {name}: variables "
                                  "read from the cluster at sync time are not expressible; put them in "
                                  "the mapping's postbuild variables")
        if spec.get("prune") is False:
            plan.note(src, "spec.prune",
                      f"prune is false; group {group.name!r} prunes as its own setting says")
        if spec.get("wait"):
            plan.note(src, "spec.wait", "Fleetgate waits for health after each sync")
        self._common(spec, src, mapping, doc, plan)
        plan.add_mapping(mapping)

    def _helmrelease(self, doc: dict[str, Any], src: Source, group: GroupSpec, plan: Plan) -> None:
        spec = doc.get("spec") or {}
        walk_unknown(plan, src, spec, HELMRELEASE_SPEC, "spec")
        if spec.get("chartRef"):
            plan.skip(src, "spec.chartRef", "a chart from an OCIRepository/HelmChart object: not yet "
                      "expressible as a mapping")
            return
        chart = ((spec.get("chart") or {}).get("spec")) or {}
        walk_unknown(plan, src, chart, {"chart", "sourceRef", "valuesFiles", "version"}, "spec.chart.spec")
        ref = chart.get("sourceRef") or {}
        if ref.get("kind") in ("HelmRepository", "OCIRepository"):
            plan.skip(src, "spec.chart.spec.sourceRef", f"chart {chart.get('chart')!r} from a "
                      f"{ref['kind']}: not yet expressible as a mapping (needs a chart repository on the "
                      "mapping)")
            return
        repo = self._source(ref, doc, src, plan, "spec.chart.spec.sourceRef")
        if repo is None:
            return
        path = str(chart.get("chart") or ".").strip()
        path = (path[2:] if path.startswith("./") else path).strip("/") or "."
        if chart.get("version"):
            plan.note(src, "spec.chart.spec.version", "a chart from Git renders the version at the commit")
        namespace = str(spec.get("targetNamespace") or _ns(doc))
        mapping = MappingSpec(slug(src.name), repo.name, path, group.name, renderer="helm",
                              target_namespace=namespace if namespace != "default" else "", source=str(src))
        values = spec.get("values") or {}
        if isinstance(values, dict):
            mapping.values = values
        release = str(spec.get("releaseName") or (
            f"{spec['targetNamespace']}-{src.name}" if spec.get("targetNamespace") else src.name))
        mapping.options["release_name"] = release
        if chart.get("valuesFiles"):
            mapping.options["value_files"] = [str(v) for v in chart["valuesFiles"]]
        for i, ref in enumerate(spec.get("valuesFrom") or []):
            kind, name = str(ref.get("kind")), str(ref.get("name"))
            if kind == "Secret":
                plan.secret(src, f"spec.valuesFrom[{i}]", name, "Helm values")
            plan.unsupported_(src, f"spec.valuesFrom[{i}]", f"{kind} {name}: values read from the cluster "
                              "are not expressible; put them in the mapping's values")
        self._common(spec, src, mapping, doc, plan)
        plan.add_mapping(mapping)


def _ns(doc: dict[str, Any]) -> str:
    return str((doc.get("metadata") or {}).get("namespace") or "default")
