from django.apps import AppConfig


class SourcesConfig(AppConfig):
    name = "fleet.sources"
    label = "sources"
    verbose_name = "Sources"
