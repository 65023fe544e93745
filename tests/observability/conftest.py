"""The rollout fixtures on real parts (sandbox clusters over HTTP, git repositories made by the test)."""

from tests.rollouts.conftest import git_repo, make_fleet, sandbox_server  # noqa: F401
