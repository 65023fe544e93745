"""Thin Celery tasks over the policy services.

None at present: the gate runs inside the rollout's prepare task (``fleet.rollouts.ports``) and policy
sources are synced by the fetch (``fleet.sources.services.fetch``)."""
