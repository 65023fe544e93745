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
HELMRELEASE_SPEC = {"chart", "chartRef", "releaseName", "targetNamespace", "values", "valuesFrom",
                    "dependsOn", "suspend", "interval", "timeout", "install"}
HELMREPOSITORY_SPEC = {"url", "type", "secretRef", "certSecretRef", "interval", "timeout", "provider"}
OCIREPOSITORY_SPEC = {"url", "ref", "secretRef", "certSecretRef", "interval", "timeout", "provider",
                      "layerSelector"}
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
            elif kind in ("HelmRepository", "OCIRepository"):
                continue  # read by the HelmReleases that name it (_chart_source)
            else:
                plan.unsupported_(src, "kind", f"a {kind} source is not imported on its own (a mapping "
                                  "reads a Git repository, a Helm repository or an OCI registry)")
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
                self._helmrelease(doc, src, group, plan, env)

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

    def _chart_source(self, kind: str, name: str, doc: dict[str, Any], src: Source, plan: Plan, where: str
                      ) -> tuple[dict[str, Any], Source] | None:
        key = (kind, _ns(doc) if not name.count("/") else name.split("/")[0], name.split("/")[-1])
        if key not in self.sources:
            plan.skip(src, where, f"{kind} {key[1]}/{key[2]} is not among the imported documents")
            return None
        sdoc, ssrc = self.sources[key]
        sspec = sdoc.get("spec") or {}
        known = HELMREPOSITORY_SPEC if kind == "HelmRepository" else OCIREPOSITORY_SPEC
        walk_unknown(plan, ssrc, sspec, known, "spec")
        for secret_key, use in (("secretRef", "chart repository credentials (store them as a chart "
                                 "repository in Fleetgate)"),
                                ("certSecretRef", "chart repository TLS certificates (a chart repository's "
                                 "ca_bundle in Fleetgate)")):
            if (sspec.get(secret_key) or {}).get("name"):
                plan.secret(ssrc, f"spec.{secret_key}", str(sspec[secret_key]["name"]), use)
        if sspec.get("provider") not in (None, "", "generic"):
            plan.unsupported_(ssrc, "spec.provider", f"{sspec['provider']!r}: cloud provider login is not "
                              "expressible; store the registry's credentials as a chart repository")
        for setting in ("interval", "timeout"):
            if setting in sspec:
                plan.note(ssrc, f"spec.{setting}", "Fleetgate asks the repository at each render")
        if not sspec.get("url"):
            plan.skip(src, where, f"{kind} {key[2]} has no spec.url")
            return None
        return sdoc, ssrc

    def _home(self, src: Source, env: Environment, plan: Plan) -> RepositorySpec | None:
        """The repository for a chart that names no Git repository: the one given with the import, else the
        only GitRepository of the documents (the one Flux reads these objects from, as bootstrap sets up)."""
        if env.home is not None:
            return plan.add_repository(RepositorySpec(slug(env.home.name), env.home.url, env.home.branch,
                                                      source=str(src)))
        gits = [(d, s) for (kind, _, _), (d, s) in sorted(self.sources.items()) if kind == "GitRepository"]
        if len(gits) == 1:
            return self._gitrepository(gits[0][0], gits[0][1], plan)
        plan.skip(src, "spec.chart", "a chart from a Helm repository or OCI registry names no Git repository "
                  "and the documents hold " + ("no" if not gits else "several") + " GitRepository: give the "
                  "repository that holds its mapping (--repository / \"repository\")")
        return None

    def _remote_chart(self, spec: dict[str, Any], chart: dict[str, Any], doc: dict[str, Any], src: Source,
                      env: Environment, plan: Plan) -> tuple[RepositorySpec, dict[str, Any]] | None:
        """A chart from a HelmRepository (``type`` default or ``oci``) or an OCIRepository (``chartRef``, or
        ``chart.spec.sourceRef``): the mapping options naming it, and the repository that holds it."""
        if spec.get("chartRef"):
            ref = spec["chartRef"] or {}
            where = "spec.chartRef"
            if ref.get("kind") != "OCIRepository":
                plan.skip(src, where, f"a chart from a {ref.get('kind')} object: only OCIRepository charts "
                          "are imported (a HelmChart names its own source: import that instead)")
                return None
            found = self._chart_source("OCIRepository", _ref_name(ref), doc, src, plan, where)
        else:
            ref = chart.get("sourceRef") or {}
            where = "spec.chart.spec.sourceRef"
            found = self._chart_source(str(ref.get("kind")), _ref_name(ref), doc, src, plan, where)
        if found is None:
            return None
        sdoc, ssrc = found
        sspec = sdoc.get("spec") or {}
        url = str(sspec["url"]).rstrip("/")
        if ssrc.kind == "OCIRepository":
            oref = sspec.get("ref") or {}
            if oref.get("digest") and not (oref.get("tag") or oref.get("semver")):
                plan.skip(src, where, f"OCIRepository {ssrc.name} is pinned to a digest only: a mapping "
                          "names a version (a tag or constraint), not a digest")
                return None
            if oref.get("digest"):
                plan.unsupported_(ssrc, "spec.ref.digest", "the digest pin is not kept: the mapping follows "
                                  "the tag")
            if oref.get("semverFilter"):
                plan.unsupported_(ssrc, "spec.ref.semverFilter", "not expressible on a mapping")
            if sspec.get("layerSelector"):
                plan.note(ssrc, "spec.layerSelector", "Fleetgate reads the Helm chart layer")
            if chart.get("version"):
                plan.note(src, "spec.chart.spec.version", "an OCIRepository chooses the version (spec.ref)")
            options = {"chart": url, "chart_repo": "",
                       "chart_version": str(oref.get("tag") or oref.get("semver") or "")}
        else:
            kind = str(sspec.get("type") or "default")
            if kind == "oci" and not url.startswith("oci://"):
                plan.skip(src, where, f"HelmRepository {ssrc.name} of type oci needs an oci:// URL")
                return None
            version = str(chart.get("version") or "").strip()
            options = {"chart": str(chart.get("chart") or ""), "chart_repo": url,
                       "chart_version": "" if version == "*" else version}
        from fleet.sources.charts import ChartError, ChartSpec

        try:
            ChartSpec(chart=options["chart"], repo=options["chart_repo"],
                      version=options["chart_version"]).check()
        except ChartError as exc:
            plan.skip(src, where, exc.message)
            return None
        home = self._home(src, env, plan)
        if home is None:
            return None
        return home, options

    def _values_files(self, files: list[str], chart_root: str, prefix: str, src: Source, plan: Plan
                      ) -> list[str] | None:
        """Flux's valuesFiles: merged in order into the chart's values, which replace the chart's defaults:
        those are kept only when the chart's own values.yaml is listed. Fleetgate layers values files over
        the defaults, so a list without it would render differently: None (skipped)."""
        import posixpath

        own = posixpath.normpath(posixpath.join(chart_root, "values.yaml")) if chart_root not in ("", ".") \
            else "values.yaml"
        out: list[str] = []
        for entry in files:
            norm = posixpath.normpath(entry.strip().removeprefix("./"))
            if norm.startswith(("../", "/")) or norm == ".." or "://" in norm:
                plan.skip(src, "spec.chart.spec.valuesFiles", f"{entry!r} leaves the chart's source")
                return None
            out.append(norm)
        if own not in out:
            plan.skip(src, "spec.chart.spec.valuesFiles", f"{files!r} does not list the chart's {own}: Flux "
                      "then drops the chart's default values, Fleetgate layers values files over them (list "
                      f"{own} first to import it)")
            return None
        if out[0] == own:
            out = out[1:]  # the chart's defaults are beneath anyway
        return [prefix + v for v in out]

    def _helmrelease(self, doc: dict[str, Any], src: Source, group: GroupSpec, plan: Plan,
                     env: Environment | None = None) -> None:
        spec = doc.get("spec") or {}
        walk_unknown(plan, src, spec, HELMRELEASE_SPEC, "spec")
        chart = ((spec.get("chart") or {}).get("spec")) or {}
        walk_unknown(plan, src, chart, {"chart", "sourceRef", "valuesFiles", "version"}, "spec.chart.spec")
        ref = chart.get("sourceRef") or {}
        namespace = str(spec.get("targetNamespace") or _ns(doc))
        value_files = [str(v) for v in chart.get("valuesFiles") or []]
        if spec.get("chartRef") or ref.get("kind") in ("HelmRepository", "OCIRepository"):
            found = self._remote_chart(spec, chart, doc, src, env or Environment(), plan)
            if found is None:
                return
            home, options = found
            mapping = MappingSpec(slug(src.name), home.name, ".", group.name, renderer="helm",
                                  target_namespace=namespace if namespace != "default" else "",
                                  source=str(src))
            mapping.options.update(options)
            if value_files:
                files = self._values_files(value_files, "", "chart:", src, plan)
                if files is None:
                    return
                if files:
                    mapping.options["value_files"] = files
        else:
            repo = self._source(ref, doc, src, plan, "spec.chart.spec.sourceRef")
            if repo is None:
                return
            path = str(chart.get("chart") or ".").strip()
            path = (path[2:] if path.startswith("./") else path).strip("/") or "."
            if chart.get("version"):
                plan.note(src, "spec.chart.spec.version",
                          "a chart from Git renders the version at the commit")
            mapping = MappingSpec(slug(src.name), repo.name, path, group.name, renderer="helm",
                                  target_namespace=namespace if namespace != "default" else "",
                                  source=str(src))
            if value_files:  # relative to the GitRepository's root
                files = self._values_files(value_files, path, "", src, plan)
                if files is None:
                    return
                if files:
                    mapping.options["value_files"] = files
        values = spec.get("values") or {}
        if isinstance(values, dict):
            mapping.values = values
        release = str(spec.get("releaseName") or (
            f"{spec['targetNamespace']}-{src.name}" if spec.get("targetNamespace") else src.name))
        mapping.options["release_name"] = release
        for i, ref in enumerate(spec.get("valuesFrom") or []):
            kind, name = str(ref.get("kind")), str(ref.get("name"))
            if kind == "Secret":
                plan.secret(src, f"spec.valuesFrom[{i}]", name, "Helm values")
            plan.unsupported_(src, f"spec.valuesFrom[{i}]", f"{kind} {name}: values read from the cluster "
                              "are not expressible; put them in the mapping's values")
        install: dict[str, Any] = spec["install"] if isinstance(spec.get("install"), dict) else {}
        walk_unknown(plan, src, install, {"createNamespace"}, "spec.install")
        if install.get("createNamespace") is True:
            if mapping.target_namespace:  # helm-controller creates it on install and keeps it on uninstall
                mapping.options["create_namespace"] = True
            else:
                plan.note(src, "spec.install.createNamespace", "the release namespace is 'default', which "
                          "every cluster has: nothing to create")
        self._common(spec, src, mapping, doc, plan)
        plan.add_mapping(mapping)


def _ref_name(ref: dict[str, Any]) -> str:
    """``namespace/name`` of a source reference that names its namespace, else ``name``."""
    name = str(ref.get("name") or "")
    return f"{ref['namespace']}/{name}" if ref.get("namespace") else name


def _ns(doc: dict[str, Any]) -> str:
    return str((doc.get("metadata") or {}).get("namespace") or "default")
