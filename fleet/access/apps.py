from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "fleet.access"
    label = "access"
    verbose_name = "Access control"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.models.signals import post_delete, post_save

        # (the token schemes are registered with drf-spectacular by fleet/urls.py, which the schema
        # generator loads first: a process that serves no URL, such as a command, does not import it)
        from fleet.access import (
            checks,  # noqa: F401  (registers the sign-in settings checks)
            sessions,
        )

        # A disabled or deleted user's sessions end at once (see fleet/access/sessions.py).
        user_model = settings.AUTH_USER_MODEL
        post_save.connect(sessions.user_saved, sender=user_model, dispatch_uid="access-end-sessions")
        post_delete.connect(sessions.user_deleted, sender=user_model, dispatch_uid="access-end-sessions-del")
