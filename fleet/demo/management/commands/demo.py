"""`manage.py demo setup|commit|status`: the guided demo on the embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from fleet.demo import setup as demo
from fleet.rollouts.models import Rollout


def default_repo_dir() -> Path:
    return Path(settings.VAR_DIR) / "demo-repository"


class Command(BaseCommand):
    help = "Set up the demo, push the next commit of its story, or show where its rollouts stand."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("action", choices=["setup", "commit", "status"])
        parser.add_argument(
            "--repo-dir", type=Path, default=None, help="the demo repository (var/demo-repository)"
        )
        parser.add_argument("--poll-interval", type=int, default=5)

    def handle(
        self, *args: Any, action: str, repo_dir: Path | None, poll_interval: int, **options: Any
    ) -> None:
        repo_dir = repo_dir or default_repo_dir()
        if action == "setup":
            state = demo.setup(repo_dir, poll_interval=poll_interval)
            verb = "created" if state.created else "kept"
            self.stdout.write(
                f"demo {verb}: repository {state.repository.url}, {len(state.new_commits)} new commit(s)"
            )
        elif action == "commit":
            if not (repo_dir / ".git").exists():
                raise CommandError(f"no demo repository at {repo_dir}: run `manage.py demo setup` first")
            sha = demo.next_commit(repo_dir)
            if sha is None:
                self.stdout.write("the demo's story is told: every commit is in the repository")
            else:
                self.stdout.write(
                    f"pushed {sha[:10]} to the demo repository; Fleetgate picks it up within seconds"
                )
        else:
            for rollout in Rollout.objects.select_related("mapping", "commit").order_by("-id")[:20]:
                self.stdout.write(
                    f"#{rollout.pk:<4} {rollout.mapping.name:<20} {rollout.commit.sha[:10]} "
                    f"{rollout.state:<18} {rollout.reason[:80]}"
                )
