"""Webhook verification and push-payload parsing for GitHub, GitLab and Gitea (pure functions).

A view does, in this order::

    if len(body) > MAX_WEBHOOK_BODY_BYTES: return 413
    result = handle_webhook(request.headers, body, secret=repository.webhook_secret)
    result.status is WebhookStatus.OK      -> result.event is a PushEvent: fetch that repository
    result.status is WebhookStatus.PING    -> 200, nothing to do
    result.status is WebhookStatus.IGNORED -> 202/200, an event Fleetgate does not act on
    UNSIGNED / FORGED                      -> 401/403 (log ``result.detail``; it never contains the secret)
    MALFORMED / TOO_LARGE / UNKNOWN_PROVIDER -> 400/413

Signatures:

* GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``.
* Gitea (and Forgejo): ``X-Gitea-Signature`` / ``X-Forgejo-Signature``: ``<hex HMAC-SHA256>``;
  ``X-Hub-Signature-256`` is accepted as well (Gitea sends both).
* GitLab: ``X-Gitlab-Token``: the secret itself, compared in constant time.

Replays (checked by ``fleet.sources.services.hook_guard``, not here): what each provider gives is

* GitHub: ``X-GitHub-Delivery`` (a GUID, the same on a redelivery) and, in push payloads,
  ``repository.pushed_at`` (seconds since the epoch) inside the signed body: ``PushEvent.pushed_at``.
* Gitea/Forgejo: ``X-Gitea-Delivery`` / ``X-Forgejo-Delivery`` (a UUID); no delivery time.
* GitLab: ``X-Gitlab-Event-UUID`` (and ``X-Gitlab-Webhook-UUID``); no delivery time, and the token is the
  secret itself, so whoever saw one delivery can make new ones.

The HMAC covers the body only, never a header: a captured delivery can be sent again under a new delivery
id, so the guard also remembers the body's digest.

Every comparison uses ``hmac.compare_digest``.  A repository without a secret cannot be verified:
``handle_webhook`` then reports UNSIGNED, so that a caller has to decide explicitly to accept it.
To find the repository a push is for, compare ``normalize_repo_url`` of each of ``PushEvent.clone_urls``
with ``normalize_repo_url`` of the stored URL.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MAX_WEBHOOK_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB and does not deliver bigger ones
MAX_REF_LENGTH = 1024  # git has no hard limit; refs are file paths (PATH_MAX 4096), real ones are short
ZERO_SHA = "0" * 40

PROVIDERS = ("github", "gitlab", "gitea")


class WebhookStatus(enum.StrEnum):
    OK = "ok"  # a verified push event
    PING = "ping"  # a verified ping / test event without a push
    IGNORED = "ignored"  # verified, but an event type Fleetgate does not act on
    UNSIGNED = "unsigned"  # no signature/token header, or no secret configured
    FORGED = "forged"  # a signature header that does not match
    MALFORMED = "malformed"  # bad signature format, bad JSON, or a push without the needed fields
    TOO_LARGE = "too_large"
    UNKNOWN_PROVIDER = "unknown_provider"


class WebhookError(ValueError):
    """A payload that cannot be understood; ``status`` says how."""

    def __init__(self, status: WebhookStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PushEvent:
    provider: str
    clone_urls: tuple[str, ...]  # https, ssh, git URLs as the provider reports them
    web_url: str
    ref: str  # refs/heads/main, refs/tags/v1
    branch: str | None  # "main" for refs/heads/main, else None
    tag: str | None
    before: str | None  # None when the ref was created
    after: str | None  # None when the ref was deleted
    created: bool
    deleted: bool
    forced: bool | None  # GitHub tells; others: None (Fleetgate detects force pushes itself)
    commit_count: int
    pusher: str
    # When the provider says the push happened, inside the signed body (GitHub's ``repository.pushed_at``);
    # None where the provider sends no time (GitLab, Gitea).  Seconds since the epoch.
    pushed_at: float | None = None


@dataclass(frozen=True)
class WebhookResult:
    status: WebhookStatus
    provider: str | None
    event_type: str = ""
    event: PushEvent | None = None
    detail: str = ""
    delivery_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is WebhookStatus.OK


# --------------------------------------------------------------------------- headers


def normalize_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """Lower-case, dash-separated header names; accepts Django ``request.headers`` or ``request.META``."""
    out: dict[str, str] = {}
    for key, value in headers.items():
        if not isinstance(key, str):
            continue
        name = key.lower().replace("_", "-")
        if name.startswith("http-"):
            name = name[5:]
        out[name] = value if isinstance(value, str) else str(value)
    return out


def detect_provider(headers: Mapping[str, Any]) -> str | None:
    h = normalize_headers(headers)
    if "x-gitea-event" in h or "x-forgejo-event" in h or "x-gogs-event" in h:
        return "gitea"
    if "x-gitlab-event" in h:
        return "gitlab"
    if "x-github-event" in h:
        return "github"
    return None


# --------------------------------------------------------------------------- signatures


def _hmac_hex(secret: str | bytes, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).hexdigest()


_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def verify_github(headers: Mapping[str, Any], body: bytes, secret: str | bytes) -> WebhookStatus:
    """Check ``X-Hub-Signature-256``: OK, UNSIGNED, FORGED or MALFORMED."""
    sig = normalize_headers(headers).get("x-hub-signature-256", "").strip()
    if not sig or not secret:
        return WebhookStatus.UNSIGNED
    algo, _, digest = sig.partition("=")
    if algo != "sha256" or not _HEX64.match(digest):
        return WebhookStatus.MALFORMED
    ok = hmac.compare_digest(digest.lower(), _hmac_hex(secret, body))
    return WebhookStatus.OK if ok else WebhookStatus.FORGED


def verify_gitea(headers: Mapping[str, Any], body: bytes, secret: str | bytes) -> WebhookStatus:
    """Check ``X-Gitea-Signature`` (or ``X-Forgejo-Signature``, or GitHub's header as a fallback)."""
    h = normalize_headers(headers)
    sig = (h.get("x-gitea-signature") or h.get("x-forgejo-signature") or "").strip()
    if not sig:
        if h.get("x-hub-signature-256"):
            return verify_github(headers, body, secret)
        return WebhookStatus.UNSIGNED
    if not secret:
        return WebhookStatus.UNSIGNED
    if not _HEX64.match(sig):
        return WebhookStatus.MALFORMED
    ok = hmac.compare_digest(sig.lower(), _hmac_hex(secret, body))
    return WebhookStatus.OK if ok else WebhookStatus.FORGED


def verify_gitlab(headers: Mapping[str, Any], body: bytes, secret: str | bytes) -> WebhookStatus:
    """Compare ``X-Gitlab-Token`` with the secret in constant time."""
    token = normalize_headers(headers).get("x-gitlab-token", "")
    if not token or not secret:
        return WebhookStatus.UNSIGNED
    expected = secret.encode() if isinstance(secret, str) else secret
    ok = hmac.compare_digest(token.encode(), expected)
    return WebhookStatus.OK if ok else WebhookStatus.FORGED


VERIFIERS = {"github": verify_github, "gitlab": verify_gitlab, "gitea": verify_gitea}


def verify_signature(provider: str, headers: Mapping[str, Any], body: bytes,
                     secret: str | bytes) -> WebhookStatus:
    try:
        verifier = VERIFIERS[provider]
    except KeyError:
        return WebhookStatus.UNKNOWN_PROVIDER
    return verifier(headers, body, secret)


def sign_github(body: bytes, secret: str | bytes) -> str:
    """The ``X-Hub-Signature-256`` value for ``body`` (for tests and for re-delivery tools)."""
    return "sha256=" + _hmac_hex(secret, body)


def sign_gitea(body: bytes, secret: str | bytes) -> str:
    return _hmac_hex(secret, body)


# --------------------------------------------------------------------------- payloads


def _sha_or_none(value: Any) -> str | None:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}", value):
        return None
    return None if set(value) == {"0"} else value.lower()


def _split_ref(ref: str) -> tuple[str | None, str | None]:
    if ref.startswith("refs/heads/"):
        return ref[len("refs/heads/"):], None
    if ref.startswith("refs/tags/"):
        return None, ref[len("refs/tags/"):]
    return None, None


def _urls(*values: Any) -> tuple[str, ...]:
    seen: list[str] = []
    for v in values:
        if isinstance(v, str) and v and v not in seen:
            seen.append(v)
    return tuple(seen)


def _require_ref(payload: Mapping[str, Any]) -> str:
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref:
        raise WebhookError(WebhookStatus.MALFORMED, "push payload has no 'ref'")
    if len(ref) > MAX_REF_LENGTH:
        raise WebhookError(WebhookStatus.MALFORMED,
                           f"push payload 'ref' is longer than {MAX_REF_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in ref):
        raise WebhookError(WebhookStatus.MALFORMED,
                           "push payload 'ref' contains white space or control characters")
    return ref


_SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")


def _require_sha(payload: Mapping[str, Any], key: str) -> str | None:
    """``before``/``after``: a 40 or 64 hex digit commit id, all zeros for none (created/deleted ref)."""
    value = payload.get(key)
    if not isinstance(value, str) or not _SHA.fullmatch(value):
        raise WebhookError(WebhookStatus.MALFORMED,
                           f"push payload has no '{key}' commit id (40 or 64 hexadecimal digits)")
    return _sha_or_none(value)


def _epoch(value: Any) -> float | None:
    """GitHub's push payloads give ``repository.pushed_at`` as seconds since the epoch."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value < 2**33 else None


def _obj(payload: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = payload.get(key)
    return value if isinstance(value, Mapping) else {}


def parse_github_push(payload: Mapping[str, Any], provider: str = "github") -> PushEvent:
    """GitHub push payload (Gitea's is the same shape)."""
    ref = _require_ref(payload)
    repo = _obj(payload, "repository")
    urls = _urls(repo.get("clone_url"), repo.get("ssh_url"), repo.get("git_url"), repo.get("html_url"))
    if not urls:
        raise WebhookError(WebhookStatus.MALFORMED, "push payload has no repository URL")
    before, after = _require_sha(payload, "before"), _require_sha(payload, "after")
    branch, tag = _split_ref(ref)
    commits = payload.get("commits")
    pusher = _obj(payload, "pusher")
    forced = payload.get("forced")
    return PushEvent(
        provider=provider,
        clone_urls=urls,
        web_url=str(repo.get("html_url") or ""),
        ref=ref,
        branch=branch,
        tag=tag,
        before=before,
        after=after,
        created=bool(payload.get("created")) or before is None,
        deleted=bool(payload.get("deleted")) or after is None,
        forced=forced if isinstance(forced, bool) else None,
        commit_count=len(commits) if isinstance(commits, list) else 0,
        pusher=str(pusher.get("name") or pusher.get("login") or pusher.get("username") or ""),
        pushed_at=_epoch(repo.get("pushed_at")) if provider == "github" else None,
    )


def parse_gitlab_push(payload: Mapping[str, Any]) -> PushEvent:
    ref = _require_ref(payload)
    project = _obj(payload, "project")
    repository = _obj(payload, "repository")
    urls = _urls(project.get("git_http_url"), project.get("git_ssh_url"), repository.get("git_http_url"),
                 repository.get("git_ssh_url"), project.get("web_url"), repository.get("homepage"))
    if not urls:
        raise WebhookError(WebhookStatus.MALFORMED, "push payload has no project URL")
    before, after = _require_sha(payload, "before"), _require_sha(payload, "after")
    branch, tag = _split_ref(ref)
    count = payload.get("total_commits_count")
    return PushEvent(
        provider="gitlab",
        clone_urls=urls,
        web_url=str(project.get("web_url") or repository.get("homepage") or ""),
        ref=ref,
        branch=branch,
        tag=tag,
        before=before,
        after=after,
        created=before is None,
        deleted=after is None,
        forced=None,
        commit_count=count if isinstance(count, int) and not isinstance(count, bool) else _count(payload),
        pusher=str(payload.get("user_username") or payload.get("user_name") or ""),
    )


def _count(payload: Mapping[str, Any]) -> int:
    commits = payload.get("commits")
    return len(commits) if isinstance(commits, list) else 0


def _event_type(provider: str, headers: Mapping[str, str]) -> str:
    if provider == "gitea":
        return (headers.get("x-gitea-event") or headers.get("x-forgejo-event")
                or headers.get("x-gogs-event") or "").strip().lower()
    if provider == "gitlab":
        return headers.get("x-gitlab-event", "").strip().lower()
    return headers.get("x-github-event", "").strip().lower()


def _delivery(provider: str, headers: Mapping[str, str]) -> str:
    for name in ("x-github-delivery", "x-gitea-delivery", "x-forgejo-delivery", "x-gitlab-event-uuid",
                 "x-gitlab-webhook-uuid"):
        if headers.get(name):
            return headers[name][:100]
    return ""


def handle_webhook(
    headers: Mapping[str, Any],
    body: bytes,
    secret: str | bytes | None,
    *,
    provider: str | None = None,
) -> WebhookResult:
    """Verify and parse one delivery.  Never raises for bad input: the status says what was wrong."""
    h = normalize_headers(headers)
    provider = provider or detect_provider(h)
    if provider not in PROVIDERS:
        return WebhookResult(WebhookStatus.UNKNOWN_PROVIDER, None,
                             detail="no X-GitHub-Event, X-Gitlab-Event or X-Gitea-Event header")
    event_type = _event_type(provider, h)
    delivery = _delivery(provider, h)
    if len(body) > MAX_WEBHOOK_BODY_BYTES:
        return WebhookResult(WebhookStatus.TOO_LARGE, provider, event_type,
                             detail=f"body larger than {MAX_WEBHOOK_BODY_BYTES} bytes", delivery_id=delivery)
    status = verify_signature(provider, h, body, secret or b"")
    if status is not WebhookStatus.OK:
        details = {
            WebhookStatus.UNSIGNED: "no signature header" if secret else "no webhook secret configured",
            WebhookStatus.FORGED: "signature does not match the body and secret",
            WebhookStatus.MALFORMED: "signature header is not in the expected format",
        }
        return WebhookResult(status, provider, event_type, detail=details.get(status, ""),
                             delivery_id=delivery)
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return WebhookResult(WebhookStatus.MALFORMED, provider, event_type,
                             detail="body is not UTF-8", delivery_id=delivery)
    except RecursionError:
        return WebhookResult(WebhookStatus.MALFORMED, provider, event_type,
                             detail="body is JSON nested too deeply", delivery_id=delivery)
    except ValueError as exc:  # JSONDecodeError, and numbers longer than Python converts
        return WebhookResult(WebhookStatus.MALFORMED, provider, event_type,
                             detail=f"body is not JSON: {str(exc)[:200]}", delivery_id=delivery)
    if not isinstance(payload, dict):
        return WebhookResult(WebhookStatus.MALFORMED, provider, event_type,
                             detail="body is not a JSON object", delivery_id=delivery)
    if provider == "github" and event_type == "ping":
        return WebhookResult(WebhookStatus.PING, provider, event_type, delivery_id=delivery,
                             extra={"zen": payload.get("zen"), "hook_id": payload.get("hook_id")})
    is_push = (
        (provider in ("github", "gitea") and event_type == "push")
        or (provider == "gitlab" and event_type in ("push hook", "tag push hook")
            and payload.get("object_kind") in ("push", "tag_push"))
    )
    if not is_push:
        return WebhookResult(WebhookStatus.IGNORED, provider, event_type,
                             detail=f"event {event_type or '(none)'!r} is not a push", delivery_id=delivery)
    try:
        event = parse_gitlab_push(payload) if provider == "gitlab" else parse_github_push(payload, provider)
    except WebhookError as exc:
        return WebhookResult(exc.status, provider, event_type, detail=str(exc), delivery_id=delivery)
    return WebhookResult(WebhookStatus.OK, provider, event_type, event=event, delivery_id=delivery)


# --------------------------------------------------------------------------- URL matching


def normalize_repo_url(url: str) -> str:
    """A comparable form of a clone URL: ``host/owner/name`` lower-cased host, no scheme, user, port
    for ssh, or ``.git``; e.g. ``git@github.com:Org/App.git`` and ``https://github.com/Org/App`` both give
    ``github.com/Org/App``.  ``file://`` URLs keep their path."""
    u = url.strip()
    m = re.match(r"^(?:[A-Za-z0-9._-]+@)?([A-Za-z0-9.-]+):(?!//)(.+)$", u)
    if m and "://" not in u:
        host, path = m.group(1), m.group(2)
    else:
        parts = urlsplit(u)
        if parts.scheme == "file":
            return "file://" + parts.path.rstrip("/").removesuffix(".git")
        host = parts.hostname or ""
        if parts.port and parts.scheme in ("http", "https") and parts.port not in (80, 443):
            host = f"{host}:{parts.port}"
        path = parts.path
    path = path.strip("/").removesuffix(".git").rstrip("/")
    return f"{host.lower()}/{path}"
