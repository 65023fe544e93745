"""Create the first admin user if there is none, and print its login once."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
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
        parser.add_argument(
            "--password-file",
            default="",
            help="Local demo only: keep the generated password in this 0600 file, print the login each time.",
        )

    def handle(self, *args: Any, username: str, password: str, password_file: str, **options: Any) -> None:
        User = get_user_model()
        keep = Path(password_file) if password_file else None
        if User.objects.filter(is_superuser=True).exists():
            existing = User.objects.filter(username=username).first()
            if keep and keep.exists() and existing and existing.check_password(keep.read_text().strip()):
                self.stdout.write(f"Admin login: {username} / {keep.read_text().strip()}")
            else:
                self.stdout.write(
                    "An admin user exists already (its password was printed when it was created)."
                )
            return
        password = password or secrets.token_urlsafe(12)
        if keep:
            keep.parent.mkdir(parents=True, exist_ok=True)
            keep.unlink(missing_ok=True)
            fd = os.open(keep, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(password)
        with acting(), transaction.atomic():
            user = User.objects.create_superuser(username=username, email="", password=password)
            RoleBinding.objects.create(user=user, role=Role.ADMIN)
            record("user.create", user, message="first admin created", target_repr=username)
        self.stdout.write(self.style.SUCCESS(f"Admin login: {username} / {password}  (shown once; store it)"))
