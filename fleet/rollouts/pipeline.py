"""The flow of one commit, in the order it runs: commit -> render -> gate -> rollout -> sync.

1. **commit** - ``fleet.sources.services.fetch.fetch_repository`` (task ``fleet.sources.fetch_repository``,
   queued by the webhook, the poller, ``POST .../fetch/``; or the ``fetch_repository`` command) records every
   new Commit under the repository's git lock.  When there are new commits it calls
   ``commits_recorded`` below: the head's own policy sources are imported first
   (``policies.services.sources.sync_sources_for_head``), so its policies apply to its own manifests.
2. **render** - ``fleet.sources.services.rendering.render_pending`` renders, commit by commit, every mapping a
   commit affects for each cluster of its group (MappingRender, RenderedManifest).  Each mapping stored as
   ``rendered`` calls ``mapping_rendered`` below, which starts the rollout once the render's transaction
   commits (``transaction.on_commit``: no rollout of a render that was rolled back).
3. **rollout** - ``start_rollout`` -> ``fleet.rollouts.services.create_rollout``: older rollouts of the
   mapping are superseded and the ``prepare`` task is queued (``fleet.core.dispatch.send``).
4. **gate** - ``prepare`` (``fleet.rollouts.services.lifecycle``): the manifests per cluster
   (``ports.render_mapping`` -> ``fleet.sources.services.manifests.mapping_manifests``, the stored render),
   the policy decisions (``ports.policy_decisions`` -> ``policies.services.evaluation.evaluate_targets``),
   the plan (server-side dry run); then blocked, awaiting approval, waiting for a manual sync, or queued.
5. **sync** - ``advance`` (``services.fanout``) queues a ``sync_slice`` task per slice of legs in batches
   (``services.sync``: apply, prune, wait for health, a thread per cluster), halting on the failure
   threshold; drift checks follow.

``install()`` (called once from ``RolloutsConfig.ready``) hands steps 1-3 to the sources app as its
``FetchStages``; the sources app imports neither policies nor rollouts.
"""

from __future__ import annotations

from django.db import transaction

from fleet.rollouts.choices import RolloutTrigger
from fleet.rollouts.models import Rollout
from fleet.sources.choices import RenderReason, RenderStatus
from fleet.sources.git import RepositoryCache
from fleet.sources.models import MappingRender, Repository
from fleet.sources.services.fetch import FetchStages, set_fetch_stages

# The steps' services (rollouts, policies, and through them the Kubernetes client) are imported when a step
# runs, not when the app loads: every process loads this module from RolloutsConfig.ready, and a command
# such as ``manage.py render`` never runs a step (docs/benchmarks.md, render command start-up).


def commits_recorded(repo: Repository, cache: RepositoryCache) -> None:
    """Step 1 -> 2: new commits were recorded; import the head's policy sources before rendering (the fetch
    hands on the repository freshly read)."""
    from policies.services.sources import sync_sources_for_head

    sync_sources_for_head(repo, cache=cache)


def mapping_rendered(render: MappingRender) -> None:
    """Step 2 -> 3: a mapping was stored as rendered at a commit; start its rollout after the commit."""
    if render.status != RenderStatus.RENDERED:
        return
    render_id = render.pk
    transaction.on_commit(lambda: start_rollout(render_id))


def start_rollout(mapping_render_id: int) -> Rollout | None:
    """The rollout of a mapping rendered at a commit, once.  Storing the same render again (a fetch that
    runs twice) starts nothing new, unless the render was redone because the mapping, its group or its
    clusters changed (reason ``config``)."""
    render = MappingRender.objects.select_related("commit", "mapping").filter(pk=mapping_render_id).first()
    if render is None or render.status != RenderStatus.RENDERED or not render.mapping.enabled:
        return None
    rollouts = Rollout.objects.filter(
        commit=render.commit, mapping=render.mapping, trigger=RolloutTrigger.COMMIT
    )
    if rollouts.filter(created__gte=render.updated).exists():
        return None
    if render.reason != RenderReason.CONFIG and rollouts.exists():
        return None
    from fleet.rollouts.services import create_rollout

    return create_rollout(render.commit, render.mapping)


STAGES = FetchStages(commits_recorded=commits_recorded, mapping_rendered=mapping_rendered)


def install() -> None:
    """Wire the pipeline: what a fetch does after recording commits and after storing each render."""
    set_fetch_stages(STAGES)
