"""Sending one notification: an HTTP POST (generic, Slack, Teams) or an email. Each returns a ``Sent``
that says whether it arrived, whether trying again may help, and what to log. Errors never carry the URL:
a Slack or Teams URL is a credential."""

from __future__ import annotations

import smtplib
from dataclasses import dataclass

import urllib3
from django.conf import settings
from django.core.mail import EmailMessage, get_connection

from fleet.core.urlguard import URLRefused, deny_networks, guard_pool_manager


@dataclass(frozen=True)
class Sent:
    ok: bool
    retryable: bool
    code: int | None = None
    error: str = ""


def _status_retryable(code: int) -> bool:
    # 5xx and 429 (rate limited) may pass later; other 4xx will not.
    return code >= 500 or code in (408, 429)


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> Sent:
    """POST ``body`` to ``url`` through the SSRF guard (every address the host resolves to is checked,
    and the connection goes to a checked address; redirects are not followed)."""
    manager = urllib3.PoolManager(num_pools=1, retries=False, timeout=urllib3.Timeout(total=timeout))
    guard_pool_manager(manager, deny_networks(), what="notification URL")
    try:
        response = manager.request(
            "POST",
            url,
            body=body,
            headers={"Content-Type": "application/json", **headers},
            redirect=False,
            preload_content=False,
        )
        code = response.status
        response.drain_conn()
        response.release_conn()
    except URLRefused as exc:
        return Sent(False, False, None, str(exc)[:500])
    except urllib3.exceptions.TimeoutError:
        return Sent(False, True, None, f"no answer within {timeout:g}s")
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, URLRefused):
            return Sent(False, False, None, str(reason)[:500])
        return Sent(False, True, None, f"connection failed ({type(reason).__name__})")
    finally:
        manager.clear()
    if 200 <= code < 300:
        return Sent(True, False, code)
    return Sent(False, _status_retryable(code), code, f"answered HTTP {code}")


def send_email(recipients: list[str], subject: str, text: str, *, timeout: float) -> Sent:
    """Send through Django's mail backend (EMAIL_* settings)."""
    try:
        connection = get_connection(timeout=timeout) if _smtp() else get_connection()
        message = EmailMessage(subject, text, settings.DEFAULT_FROM_EMAIL, recipients, connection=connection)
        message.send(fail_silently=False)
    except smtplib.SMTPResponseException as exc:
        code = int(exc.smtp_code)
        return Sent(False, 400 <= code < 500, code, f"the mail server answered {code}")
    except smtplib.SMTPRecipientsRefused as exc:
        codes = sorted({int(c) for c, _ in exc.recipients.values()})
        return Sent(
            False,
            all(400 <= c < 500 for c in codes),
            codes[0] if codes else None,
            f"recipients refused ({', '.join(map(str, codes))})",
        )
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        return Sent(False, True, None, f"mail server unreachable ({type(exc).__name__})")
    return Sent(True, False, 250)


def _smtp() -> bool:
    return settings.EMAIL_BACKEND == "django.core.mail.backends.smtp.EmailBackend"
