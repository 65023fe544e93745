from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from fleet.access.models import APIToken
from fleet.audit.services import record
from fleet.core.context import acting


class Command(BaseCommand):
    help = "Issue an API token for a user and print its key (shown once)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("--description", default="created by manage.py create_token")
        parser.add_argument("--days", type=int, default=None, help="Days until expiry (0: never).")

    def handle(self, *args: Any, username: str, description: str, days: int | None, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        with acting(), transaction.atomic():
            token, key = APIToken.issue(user, description=description, days=days)
            record("apitoken.create", token, message=f"token {token.prefix}… issued for {username}")
        self.stdout.write(key)
