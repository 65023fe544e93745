"""`manage.py demo setup` twice: the second run keeps everything and duplicates nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from clusters.models import ClusterGroup
from fleet.sources.models import PathMapping, Repository
from policies.models import PolicySource

pytestmark = pytest.mark.django_db


def counts() -> tuple[int, int, int, int]:
    return (
        ClusterGroup.objects.count(),
        Repository.objects.count(),
        PathMapping.objects.count(),
        PolicySource.objects.count(),
    )


def test_setup_is_idempotent_and_commit_tells_the_rest(tmp_path: Path, capsys: Any) -> None:
    repo_dir = tmp_path / "demo"
    call_command("demo", "setup", "--repo-dir", str(repo_dir))
    first = counts()
    assert first == (3, 1, 9, 1)
    call_command("demo", "setup", "--repo-dir", str(repo_dir))
    assert counts() == first
    prod = ClusterGroup.objects.get(name="prod")
    assert prod.approval_required and prod.approvals_required == 2
    call_command("demo", "commit", "--repo-dir", str(repo_dir))
    assert "pushed" in capsys.readouterr().out
    call_command("demo", "commit", "--repo-dir", str(repo_dir))
    assert "story is told" in capsys.readouterr().out
