"""Creating and extending the demo Git repository: a real repository with history, on local disk."""

from __future__ import annotations

from pathlib import Path

from git import Actor, Repo

from fleet.demo.content import STORY

AUTHORS = [
    Actor("Dana Developer", "dana@demo.fleetgate.local"),
    Actor("Sam Sre", "sam@demo.fleetgate.local"),
]


def _write(root: Path, files: dict[str, str], deletions: list[str]) -> list[str]:
    changed = []
    for relative, text in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
            changed.append(relative)
    for relative in deletions:
        if (root / relative).exists():
            (root / relative).unlink()
            changed.append(relative)
    return changed


def commit(
    root: Path,
    message: str,
    files: dict[str, str],
    deletions: list[str] | None = None,
    author: Actor | None = None,
) -> str | None:
    """Write files and commit them; returns the new SHA, or None when nothing changed."""
    repo = Repo(root)
    changed = _write(root, files, deletions or [])
    if not changed:
        return None
    present = [path for path in changed if (root / path).exists()]
    removed = [path for path in changed if not (root / path).exists()]
    if present:
        repo.index.add(present)
    if removed:
        repo.index.remove(removed)
    author = author or AUTHORS[0]
    return repo.index.commit(message, author=author, committer=author).hexsha


def create(root: Path, steps: int | None = None) -> list[str]:
    """Create the demo repository at `root` (branch main) with the first `steps` commits of the story.

    Idempotent: an existing repository keeps its history; only story steps it lacks are added.
    """
    root.mkdir(parents=True, exist_ok=True)
    repo = Repo(root) if (root / ".git").exists() else Repo.init(root, initial_branch="main")
    done = {c.message.strip() for c in repo.iter_commits()} if repo.head.is_valid() else set()
    shas = []
    for index, (message, files, deletions) in enumerate(STORY[: steps if steps is not None else len(STORY)]):
        if message in done:
            continue
        sha = commit(root, message, files, deletions, author=AUTHORS[index % len(AUTHORS)])
        if sha:
            shas.append(sha)
    return shas
