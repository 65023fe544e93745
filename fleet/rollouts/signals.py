"""Signal wiring of the rollouts app (connected in RolloutsConfig.ready).

A mapping rendered at a commit (``sources.MappingRender`` saved with status ``rendered``) starts a rollout
of that commit for that mapping, once the render's transaction commits. Re-saving the same render (a
fetch that runs twice) starts nothing new, unless the render was redone because the mapping, its group
or its clusters changed."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_save


def _render_saved(sender: Any, instance: Any, raw: bool = False, **_: Any) -> None:
    if raw or instance.status != "rendered":
        return
    mapping_render_id = instance.pk

    def start() -> None:
        from fleet.rollouts.choices import RolloutTrigger
        from fleet.rollouts.models import Rollout
        from fleet.rollouts.services import create_rollout
        from fleet.sources.models import MappingRender

        render = (
            MappingRender.objects.select_related("commit", "mapping").filter(pk=mapping_render_id).first()
        )
        if render is None or render.status != "rendered" or not render.mapping.enabled:
            return
        existing = Rollout.objects.filter(
            commit=render.commit,
            mapping=render.mapping,
            trigger=RolloutTrigger.COMMIT,
            created__gte=render.updated,
        )
        if existing.exists():
            return
        if (
            render.reason != "config"
            and Rollout.objects.filter(
                commit=render.commit, mapping=render.mapping, trigger=RolloutTrigger.COMMIT
            ).exists()
        ):
            return
        create_rollout(render.commit, render.mapping)

    transaction.on_commit(start)


def connect() -> None:
    from fleet.sources.models import MappingRender

    post_save.connect(_render_saved, sender=MappingRender, dispatch_uid="rollouts_on_render")
    # Importing the tasks module registers the worker_ready handler in every process that loads apps.
    from fleet.rollouts import tasks  # noqa: F401
