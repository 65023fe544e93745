from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "fleet.demo"
    label = "demo"
    verbose_name = "Demo"
