"""The error of fetching a chart: a RenderError with a stable ``code`` (stored like any render error)."""

from __future__ import annotations

from typing import Any

from fleet.sources.render.errors import RenderError

# code -> what it means (docs/sources.md, Helm charts from repositories)
CODES = {
    "network_required": "the repository could not be reached (offline, DNS, refused, timeout, TLS)",
    "auth_failed": "the repository refused the credentials (or asked for some and none are stored)",
    "not_found": "the repository has no such chart or version",
    "digest_mismatch": "the downloaded chart is not the one the repository (or the pin) names",
    "too_large": "the index or chart is larger than the configured limit",
    "refused": "the URL points at a denied address (FLEETGATE_URL_DENY_CIDRS) or uses a refused scheme",
    "invalid": "the chart reference, index or archive is malformed",
}


class ChartError(RenderError):
    """A chart could not be resolved or fetched.  The message names the chart and the repository (never a
    credential); ``code`` is one of ``CODES``."""

    def __init__(self, code: str, message: str, *, file: str | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unknown chart error code {code!r}")
        self.code = code
        super().__init__(f"{code}: {message}", file=file, renderer="helm")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "code": self.code}


def withheld_hint(creds: Any) -> str:
    """What to do about an auth refusal: store credentials, or (when a stored chart repository has them but
    is scoped to other cluster groups) say that they are not available to this mapping's group."""
    name = getattr(creds, "withheld", "")
    if name:
        return (f"credentials not available to this mapping's group: chart repository {name} has them, but "
                "is scoped to other cluster groups (its cluster_groups)")
    return "store them as a chart repository"
