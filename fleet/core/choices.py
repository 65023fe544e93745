from django.db import models


class ChangeContext(models.TextChoices):
    WEB = "web", "Web UI"
    API = "api", "REST API"
    TASK = "task", "Background task"
    COMMAND = "command", "Management command"
    WEBHOOK = "webhook", "Webhook"
