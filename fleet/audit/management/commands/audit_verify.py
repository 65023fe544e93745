"""`manage.py audit_verify`: walk the hash chain; OK with the count and head hash, or the first bad event."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from fleet.audit.models import AuditChainHead
from fleet.audit.services import verify


class Command(BaseCommand):
    help = "Verify the audit log's hash chain; exit 1 naming the first event that does not match."

    def handle(self, *args: Any, **options: Any) -> None:
        result = verify()
        head = AuditChainHead.objects.filter(pk=1).first()
        if result.ok:
            base = f", continuing from archived #{head.base_sequence}" if head and head.base_sequence else ""
            self.stdout.write(f"OK: {result.checked} events verified{base}; head hash {result.head_hash}")
            return
        ident = f" (id {result.first_bad_id})" if result.first_bad_id is not None else ""
        raise CommandError(
            f"BROKEN at event #{result.first_bad_sequence}{ident}: {result.reason}. "
            f"{result.checked} events verified before it; last good hash {result.head_hash}",
            returncode=1,
        )
