from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    name = "fleet.rollouts"
    label = "rollouts"
    verbose_name = "Rollouts"

    def ready(self) -> None:
        # The flow of a commit (fetch -> render -> rollout), wired once; see fleet/rollouts/pipeline.py.
        from fleet.rollouts import pipeline

        pipeline.install()
        # Importing the tasks module registers the worker_ready handler in every process that loads apps.
        from fleet.rollouts import tasks  # noqa: F401
