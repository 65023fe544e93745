"""Rendering of mapped repository paths per cluster (Django-free).

Public API::

    from fleet.sources.render import (ClusterContext, RenderRequest, RenderError, SourceTree,
                                      render, compute_input_hash, detect_renderer)

    tree = SourceTree(exported_dir)            # reuse for every mapping x cluster of one commit
    request = RenderRequest(path="apps/web", renderer="auto",
                            cluster=ClusterContext(name="eu-1", labels={"region": "eu"}, group="prod",
                                                   repository=url, commit=sha),
                            values=(mapping.values, group.values, cluster.values),
                            namespace=mapping.target_namespace or None)
    key = compute_input_hash(tree, request)    # look up a cached result first, if you keep one
    result = render(tree, request)             # RenderResult; raises RenderError(file, line, document)

See ``engine`` (flow), ``plain``/``kustomize``/``helm`` (each renderer's rules), ``context``
(``${...}`` substitution and values layering), ``customize`` (``fleetgate.yaml``), ``yamlsafe`` (limits).
"""

from .context import ClusterContext, Substituter, deep_merge, merge_layers
from .customize import FleetgateFile, parse_fleetgate, selector_matches
from .engine import (
    RENDER_FORMAT_VERSION,
    RenderRequest,
    RenderResult,
    compute_input_hash,
    declared_dependencies,
    detect_renderer,
    expand_mapping_path,
    fleet_file_references,
    input_files,
    render,
)
from .errors import RenderError
from .helm import helm_hook_phases
from .kustomize import find_kubectl, kustomization_graph
from .objects import CLUSTER_SCOPED_KINDS, RenderedObject
from .plain import DirectoryOptions, scan
from .tree import SourceTree
from .yamlsafe import MAX_DOCUMENT_BYTES, MAX_FILE_BYTES, load_documents


def kustomize_dependencies(tree: SourceTree | str, path: str) -> list[str]:
    """Repository-relative directories a Kustomize mapping reads (itself first), for
    ``fleet.sources.git.affected_mappings(dependencies=...)``."""
    t = tree if isinstance(tree, SourceTree) else SourceTree(tree)
    directory = t.resolve(path, what="mapping path")
    if t.kustomization_file(directory) is None and directory.is_dir():
        # a plain directory (Flux's layout): the bases of its nested kustomizations
        found = [t.rel(directory)]
        for base in scan(t, directory).bases:
            found.extend(r for r in (t.rel(d) for d in kustomization_graph(t, base)) if r not in found)
        return found
    return [t.rel(d) for d in kustomization_graph(t, directory)]


__all__ = [
    "CLUSTER_SCOPED_KINDS",
    "MAX_DOCUMENT_BYTES",
    "MAX_FILE_BYTES",
    "RENDER_FORMAT_VERSION",
    "ClusterContext",
    "DirectoryOptions",
    "FleetgateFile",
    "RenderError",
    "RenderRequest",
    "RenderResult",
    "RenderedObject",
    "SourceTree",
    "Substituter",
    "compute_input_hash",
    "declared_dependencies",
    "deep_merge",
    "detect_renderer",
    "expand_mapping_path",
    "find_kubectl",
    "fleet_file_references",
    "helm_hook_phases",
    "input_files",
    "kustomization_graph",
    "kustomize_dependencies",
    "load_documents",
    "merge_layers",
    "parse_fleetgate",
    "render",
    "selector_matches",
]
