"""Rancher Fleet conformance: every deployable path of a fleet-examples checkout, rendered by Fleetgate.

Usage (from the project root, with the venv)::

    python tools/conformance/fleet_examples.py PATH-TO-FLEET-EXAMPLES-CHECKOUT [--markdown]

Nothing of fleet-examples is vendored: the checkout is read where it is.  A deployable path is a directory
holding a ``fleet.yaml`` (a Fleet bundle), or a top-level directory of plain manifests without one.  Each is
rendered (``fleet.sources.render.render``, what a mapping of that path renders) for the clusters Fleet's own
test script renders it for: ``env=dev``, ``env=test`` and ``env=prod`` (``tests/test.sh``: ``fleet test -l
env=...``).  For each path the table gives

* **before**: the render with ``fleet.yaml`` not read, as Fleetgate did before it read Fleet's bundle spec
  (in a plain directory the file was a manifest);
* **after**: the render now; ``objects`` per environment (the Namespace Fleet creates is counted apart);
* **fixtures**: where the checkout has Fleet's expected output (``tests/expected/<path>/<env>-output.yaml``),
  whether Fleetgate's objects are the same: the same (kind, namespace, name) and the same bodies, without
  the ``objectset.rio.cattle.io`` labels and annotations Fleet's apply adds, Fleetgate's drift annotation
  and the Namespace object (Fleet's agent creates it; ``fleet test`` does not print it);
* the warnings (keys reported by name) of the render.

Exit status 0 when no path that Fleet's fixtures cover differs from them, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")

ENVS = ("dev", "test", "prod")
FLEET_META = ("objectset.rio.cattle.io/",)


def deployable_paths(root: Path) -> list[str]:
    paths: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root).as_posix()
        if rel.startswith("tests"):
            continue
        if "fleet.yaml" in filenames or "fleet.yml" in filenames:
            paths.add(rel)
        elif rel != "." and "/" not in rel and any(f.endswith((".yaml", ".yml")) for f in filenames):
            paths.add(rel)
    return sorted(paths)


@contextmanager
def fleet_yaml_unread() -> Iterator[None]:
    """The engine as it was before fleet.yaml was read: no bundle file, fleet.yaml a manifest."""
    from fleet.sources.render import engine, plain

    saved = engine.load_fleet_yaml, plain.NOT_MANIFESTS, getattr(plain, "FLEET_BUNDLE_FILES", ())
    engine.load_fleet_yaml = lambda *a, **k: None  # type: ignore[assignment]
    plain.NOT_MANIFESTS = tuple(n for n in saved[1] if not n.startswith("fleet."))
    plain.FLEET_BUNDLE_FILES = ()  # type: ignore[assignment]
    try:
        yield
    finally:
        engine.load_fleet_yaml, plain.NOT_MANIFESTS = saved[0], saved[1]  # type: ignore[assignment]
        plain.FLEET_BUNDLE_FILES = saved[2]  # type: ignore[assignment]


def render_env(tree: Any, path: str, env: str) -> tuple[Any, str]:
    from fleet.sources.render import ClusterContext, RenderError, RenderRequest, render

    ctx = ClusterContext(name=f"{env}-1", labels={"env": env}, group="fleet-examples",
                         repository="https://github.com/rancher/fleet-examples", commit="fake" * 10)
    try:
        return render(tree, RenderRequest(path=path, cluster=ctx)), ""
    except RenderError as exc:
        return None, str(exc)


def _strip(body: dict[str, Any]) -> dict[str, Any]:
    meta = dict(body.get("metadata") or {})
    for key in ("labels", "annotations"):
        kept = {k: v for k, v in (meta.get(key) or {}).items()
                if not k.startswith(FLEET_META) and k != "fleetgate.io/compare-ignore"}
        if kept:
            meta[key] = kept
        else:
            meta.pop(key, None)
    return {**body, "metadata": meta}


def _key(body: dict[str, Any]) -> tuple[str, str, str]:
    meta = body.get("metadata") or {}
    return str(body.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name"))


def compare_fixture(result: Any, fixture: Path) -> str:
    import yaml

    expected = {_key(d): _strip(d) for d in yaml.safe_load_all(fixture.read_text()) if d}
    got = {_key(o.body): _strip(o.body) for o in result.objects if o.kind != "Namespace"}
    if set(expected) != set(got):
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        return f"differs (missing {missing}, extra {extra})"
    changed = [k for k in expected if expected[k] != got[k]]
    return f"differs in {changed}" if changed else "same"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkout")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    import django

    django.setup()
    from fleet.sources.render import SourceTree

    root = Path(args.checkout).resolve()
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip() or "(not a git checkout)"
    rows = []
    failures = 0
    for path in deployable_paths(root):
        with fleet_yaml_unread():
            before = [render_env(SourceTree(root), path, env) for env in ENVS]
        after = [render_env(SourceTree(root), path, env) for env in ENVS]
        b = "ok" if all(r for r, _ in before) else "fails: " + next(e for r, e in before if not r)[:90]
        if all(r for r, _ in before):
            verdicts = [compare_fixture(r, root / "tests" / "expected" / path / f"{env}-output.yaml")
                        for env, (r, _) in zip(ENVS, before, strict=True)
                        if (root / "tests" / "expected" / path / f"{env}-output.yaml").is_file()]
            if verdicts:
                b += f" ({sum(v == 'same' for v in verdicts)} of {len(verdicts)} as Fleet's fixtures)"
        counts, fixtures, warnings = [], [], set()
        for env, (res, _err) in zip(ENVS, after, strict=True):
            if res is None:
                counts.append(f"{env}: error")
                continue
            ns = sum(1 for o in res.objects if o.kind == "Namespace" and o.source.endswith(("fleet.yaml",
                                                                                              "fleet.yml")))
            counts.append(f"{env}: {len(res.objects) - ns}" + ("+ns" if ns else "")
                          + (" (doNotDeploy)" if res.skipped else ""))
            warnings.update(res.warnings)
            fixture = root / "tests" / "expected" / path / f"{env}-output.yaml"
            if fixture.is_file():
                verdict = compare_fixture(res, fixture)
                fixtures.append(f"{env} {verdict}")
                failures += verdict != "same"
        errors = sorted({e for r, e in after if r is None})
        a = "ok" if not errors else "refused: " + errors[0][:160]
        rows.append((path, b, a, ", ".join(counts), "; ".join(fixtures) or "-",
                     " / ".join(sorted(warnings))[:300] or "-"))
    header = ("path", "before", "after", "objects", "Fleet's fixtures", "reported")
    if args.markdown:
        print(f"fleet-examples commit `{commit}`\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row) + " |")
    else:
        print(f"fleet-examples {commit}")
        for row in rows:
            print("\n".join(f"  {h:>16}: {c}" for h, c in zip(header, row, strict=True)))
            print()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
