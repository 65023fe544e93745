"""Remove passwords stored in repository URLs (``https://user:secret@host/repo.git``).

Before this migration the Repository model accepted a URL with a password, which then appeared in the API,
the UI, audit snapshots and exports.  For every stored URL that carries one:

* the URL keeps its scheme, user name, host, port and path, without the password
  (``https://user:secret@host/r.git`` -> ``https://user@host/r.git``; ``user:secret@host:r`` ->
  ``user@host:r``);
* over http(s), when the repository has no token yet and uses no SSH key, the password becomes its token
  (stored encrypted by the token field itself, with the configured FLEETGATE_ENCRYPTION_KEYS), the
  authentication method becomes ``token`` and an empty ``username`` takes the URL's user name, so fetches
  keep working;
* otherwise (a token is already set, or the repository uses SSH) the password is dropped.

Audit rows written before this migration are not rewritten: the audit log is append-only and
hash-chained.  From now on the audit redaction removes URL passwords from every recorded value.
Reversing the migration changes nothing (a removed password is not put back).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from django.db import migrations

_SCP_WITH_PASSWORD = re.compile(r"^([^@/\s:]*):([^@/\s]*)@([^@/\s]+:.*)$")


def split_password(url: str) -> tuple[str, str, str] | None:
    """(url without the password, user name, password), or None when the URL carries no password."""
    if "://" not in url:
        m = _SCP_WITH_PASSWORD.match(url)
        if not m:
            return None
        user, password, rest = m.groups()
        return (f"{user}@{rest}" if user else rest), unquote(user), unquote(password)
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return None
    user_raw, _, password_raw = userinfo.partition(":")
    netloc = f"{user_raw}@{hostport}" if user_raw else hostport
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), unquote(
        user_raw
    ), unquote(password_raw)


def scrub_url_passwords(apps: Any, schema_editor: Any) -> None:
    Repository = apps.get_model("sources", "Repository")
    for repo in Repository.objects.all().order_by("pk").iterator():
        found = split_password(repo.url)
        if found is None:
            continue
        url, user, password = found
        repo.url = url
        fields = ["url"]
        is_http = url.lower().startswith(("http://", "https://"))
        if password and is_http and not repo.token and repo.auth_method in ("none", "token"):
            repo.token = password
            repo.auth_method = "token"
            fields += ["token", "auth_method"]
            if not repo.username and user:
                repo.username = user
                fields.append("username")
        repo.save(update_fields=fields)


class Migration(migrations.Migration):
    dependencies = [
        ("sources", "0002_render_results"),
    ]

    operations = [
        migrations.RunPython(scrub_url_passwords, migrations.RunPython.noop, elidable=True),
    ]
