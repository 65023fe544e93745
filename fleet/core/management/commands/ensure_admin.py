"""Create the first admin user if there is none, and print its login once."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from fleet.access.choices import Role
from fleet.access.models import RoleBinding
from fleet.audit.services import record
from fleet.core.context import acting


class Command(BaseCommand):
    help = "Create an admin user (role admin on all clusters) if no superuser exists; print its login once."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default="", help="Default: a random password, printed once.")

    def handle(self, *args: Any, username: str, password: str, **options: Any) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("An admin user exists already.")
            return
        password = password or secrets.token_urlsafe(12)
        with acting(), transaction.atomic():
            user = User.objects.create_superuser(username=username, email="", password=password)
            RoleBinding.objects.create(user=user, role=Role.ADMIN)
            record("user.create", user, message="first admin created", target_repr=username)
        self.stdout.write(self.style.SUCCESS(f"Admin login: {username} / {password}  (shown once; store it)"))
