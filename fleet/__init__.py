"""Fleetgate: a multi-cluster GitOps fleet manager with a policy gate."""

from .celery import app as celery_app

__all__ = ("celery_app",)
