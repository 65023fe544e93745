from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "fleet.access"
    label = "access"
    verbose_name = "Access control"

    def ready(self) -> None:
        from fleet.access import schema  # noqa: F401  (registers the token scheme with drf-spectacular)
