"""The sources domain logic (typed, no HTTP): fetching, recording commits, rendering, webhooks.

Views, tasks, admin actions and management commands call these; tests call them too.
"""

from fleet.sources.services.fetch import (
    CredentialsError,
    FetchOutcome,
    NewCommit,
    due_for_poll,
    fetch_repository,
    mark_queued,
    repository_cache,
    repository_credentials,
    safe_error,
)
from fleet.sources.services.hooks import WebhookOutcome, receive_webhook
from fleet.sources.services.preview import Preview, PreviewError, preview_render
from fleet.sources.services.rendering import (
    MappingRenderOutcome,
    RenderSession,
    RenderStats,
    build_requests,
    config_fingerprint,
    expand_paths,
    load_mappings,
    render_commit,
    render_pending,
    render_requests,
)
from fleet.sources.services.repositories import (
    ConnectionCheck,
    check_connection,
    enqueue_fetch,
    request_fetch,
    rotate_webhook_secret,
)

__all__ = [
    "ConnectionCheck",
    "CredentialsError",
    "FetchOutcome",
    "MappingRenderOutcome",
    "NewCommit",
    "Preview",
    "PreviewError",
    "RenderSession",
    "RenderStats",
    "WebhookOutcome",
    "build_requests",
    "check_connection",
    "config_fingerprint",
    "due_for_poll",
    "enqueue_fetch",
    "expand_paths",
    "fetch_repository",
    "load_mappings",
    "mark_queued",
    "preview_render",
    "receive_webhook",
    "render_commit",
    "render_pending",
    "render_requests",
    "repository_cache",
    "repository_credentials",
    "request_fetch",
    "rotate_webhook_secret",
    "safe_error",
]
