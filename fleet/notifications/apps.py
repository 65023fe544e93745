from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "fleet.notifications"
    label = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        # The one hook: an audit event of a notifiable kind queues a fan-out once its transaction commits
        # (fleet/notifications/hook.py). Nothing else in Fleetgate calls the notifier.
        from fleet.notifications import hook

        hook.install()
