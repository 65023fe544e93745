"""`manage.py render`: what a cluster would receive, from a mapping at a commit or from a local directory.

* ``manage.py render <repo> <commit> <mapping> --cluster NAME``: a registered mapping at a commit, exactly as
  a fetch would store it (the database's repository, mapping, group and cluster).
* ``manage.py render --dir PATH [--cluster NAME] [--label k=v]... [--values FILE]...``: offline, a
  directory of a local checkout with no database row at all (a new user trying Fleetgate on their
  repository); the repository root is the enclosing git work tree (or ``--root``).

Start-up is kept small (docs/benchmarks.md, "manage.py render"): no system checks (the command serves no
URL), the database modules only in the first form.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Render a mapping of a repository at a commit for one cluster, or (--dir) a directory of a local "
        "checkout without any database row, and print the multi-document YAML that cluster would receive "
        "(each document preceded by '# Source: <file>'). Nothing is stored. A render error prints the file "
        "and line and exits with code 1."
    )
    # A read-only preview: the URL configuration, views and their checks are not needed (start-up time).
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("repository", nargs="?", help="repository name or id")
        parser.add_argument("commit", nargs="?", help="commit sha (or unique prefix), or 'head'")
        parser.add_argument("mapping", nargs="?", help="mapping name or id")
        parser.add_argument("--cluster", help="cluster name (a member of the mapping's group); with --dir "
                            "the name in the render context (default 'local')")
        offline = parser.add_argument_group("offline (--dir): a local directory, no database")
        offline.add_argument("--dir", help="the directory to render (in a local checkout)")
        offline.add_argument("--root", help="the repository root (default: the enclosing git work tree, "
                             "else the directory itself)")
        offline.add_argument("--renderer", default="auto", choices=["auto", "plain", "kustomize", "helm"])
        offline.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                             help="a cluster label (repeat)")
        offline.add_argument("--group", default="", help="the cluster group's name in the render context")
        offline.add_argument("--values", action="append", default=[], metavar="FILE",
                             help="a YAML values file (repeat; later ones win)")
        offline.add_argument("--namespace", default=None, help="the mapping's target namespace")
        offline.add_argument("--no-recurse", action="store_true",
                             help="plain directories: do not read subdirectories (Argo CD's default)")
        offline.add_argument("--include", default="", help="plain directories: Argo CD include glob")
        offline.add_argument("--exclude", default="", help="plain directories: Argo CD exclude glob")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["dir"]:
            if options["repository"] or options["commit"] or options["mapping"]:
                raise CommandError("--dir renders a local directory: give no repository, commit or mapping")
            self._offline(options)
            return
        if not (options["repository"] and options["commit"] and options["mapping"] and options["cluster"]):
            raise CommandError("give <repository> <commit> <mapping> --cluster NAME, or --dir PATH")
        self._registered(options)

    def _registered(self, options: dict[str, Any]) -> None:
        from fleet.sources.management.commands._lookup import get_mapping, get_repository
        from fleet.sources.services.preview import PreviewError, preview_render

        repo = get_repository(options["repository"])
        mapping = get_mapping(repo, options["mapping"])
        try:
            preview = preview_render(repo, options["commit"], mapping, options["cluster"])
        except PreviewError as exc:
            raise CommandError(str(exc), returncode=1) from None
        if not preview.ok and preview.error is not None:
            err = preview.error
            where = err.file or mapping.path
            if err.line is not None:
                where += f":{err.line}"
            raise CommandError(f"render failed at {where}: {err.message}", returncode=1)
        for warning in preview.warnings:
            self.stderr.write(f"warning: {warning}")
        self.stdout.write(preview.to_yaml(), ending="")

    def _offline(self, options: dict[str, Any]) -> None:
        from fleet.sources.render import (
            ClusterContext,
            DirectoryOptions,
            RenderError,
            RenderRequest,
            SourceTree,
            render,
        )
        from fleet.sources.render.yamlsafe import load_one
        from fleet.sources.services.preview import Preview

        directory = Path(options["dir"]).resolve()
        if not directory.is_dir():
            raise CommandError(f"--dir {options['dir']!r} is not a directory")
        root = Path(options["root"]).resolve() if options["root"] else _work_tree(directory)
        if root != directory and root not in directory.parents:
            raise CommandError(f"--dir {options['dir']!r} is not inside --root {options['root']!r}")
        labels: dict[str, str] = {}
        for item in options["label"]:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CommandError(f"--label {item!r}: write KEY=VALUE")
            labels[key] = value
        path = directory.relative_to(root).as_posix()
        try:
            values = []
            for f in options["values"]:
                data = load_one(Path(f).read_bytes(), file=f)
                if data is not None and not isinstance(data, dict):
                    raise CommandError(f"--values {f}: a values file must be a mapping")
                values.append(data or {})
            request = RenderRequest(
                path=path if path != "." else "",
                cluster=ClusterContext(name=options["cluster"] or "local", labels=labels,
                                       group=options["group"], repository=str(root), commit=""),
                renderer=options["renderer"], values=tuple(values), namespace=options["namespace"],
                directory=DirectoryOptions(recurse=not options["no_recurse"], include=options["include"],
                                           exclude=options["exclude"]))
            result = render(SourceTree(root), request)
        except OSError as exc:
            raise CommandError(f"cannot read {exc.filename}: {exc.strerror}", returncode=1) from None
        except RenderError as exc:
            where = exc.file or path
            if exc.line is not None:
                where += f":{exc.line}"
            raise CommandError(f"render failed at {where}: {exc.message}", returncode=1) from None
        for warning in result.warnings:
            self.stderr.write(f"warning: {warning}")
        preview = Preview("", path, request.cluster.name, ok=True, renderer=result.renderer,
                          namespace=result.namespace or "", skipped=result.skipped,
                          objects=tuple(o.to_dict() for o in result.objects))
        self.stdout.write(preview.to_yaml(), ending="")


def _work_tree(directory: Path) -> Path:
    """The enclosing git work tree (a directory holding ``.git``), else ``directory`` itself."""
    for candidate in (directory, *directory.parents):
        if os.path.exists(candidate / ".git"):
            return candidate
    return directory
