"""``/_sandbox/…``: a small JSON admin API to manage clusters and faults from another process.

- ``GET  /_sandbox/clusters``                      names and URLs
- ``POST /_sandbox/clusters`` ``{"name", "token"?, "settings"?}``  add a cluster (201)
- ``DELETE /_sandbox/clusters/<name>``             remove a cluster
- ``PATCH /_sandbox/clusters/<name>/faults``       e.g. ``{"error_rate": 0.1, "seed": 1}``, ``{"down": true}``
- ``PATCH /_sandbox/clusters/<name>/settings``     e.g. ``{"rollout_delay": 0}``
- ``POST /_sandbox/save``                          write the state file now

Every call needs ``Authorization: Bearer <admin_token>`` (401 otherwise); a server without an
``admin_token`` refuses every call: the sandbox's clusters can be changed and broken through this API, so
it is never open.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
from email.message import Message
from typing import TYPE_CHECKING, Any

from . import errors

if TYPE_CHECKING:
    from .server import SandboxServer


def _body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise errors.bad_request("the body must be JSON") from None
    if not isinstance(data, dict):
        raise errors.bad_request("the body must be a JSON object")
    return data


def handle_admin(
    sandbox: SandboxServer, method: str, path: str, headers: Message, raw: bytes
) -> tuple[int, dict[str, Any]]:
    expected = sandbox.admin_token or ""
    auth = headers.get("Authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not expected or not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise errors.unauthorized()
    parts = [p for p in path.split("/") if p][1:]
    if parts == ["save"] and method == "POST":
        sandbox.save()
        return 200, {"saved": sandbox.state_file}
    if not parts or parts[0] != "clusters":
        raise errors.path_not_found()
    if len(parts) == 1:
        if method == "GET":
            return 200, {"clusters": [{"name": c.name, "url": c.url} for c in sandbox.clusters()]}
        if method == "POST":
            data = _body(raw)
            name = data.get("name")
            if not isinstance(name, str) or not name:
                raise errors.bad_request("name is required")
            try:
                cluster = sandbox.add_cluster(name, token=data.get("token"), **(data.get("settings") or {}))
            except ValueError as exc:
                raise errors.ApiError(409, "AlreadyExists", str(exc), {}) from None
            except TypeError as exc:
                raise errors.bad_request(str(exc)) from None
            return 201, {"name": cluster.name, "url": cluster.url}
        raise errors.method_not_allowed()
    try:
        cluster = sandbox.cluster(parts[1])
    except KeyError:
        raise errors.not_found("clusters", "sandbox.fleetgate.io", parts[1]) from None
    if len(parts) == 2:
        if method == "DELETE":
            sandbox.remove_cluster(cluster.name)
            return 200, {"removed": cluster.name}
        if method == "GET":
            return 200, {
                "name": cluster.name,
                "url": cluster.url,
                "objects": cluster.state.count(),
                "resourceVersion": str(cluster.state.rv),
                "settings": dataclasses.asdict(cluster.settings),
                "faults": dataclasses.asdict(cluster.faults.snapshot()),
            }
        raise errors.method_not_allowed()
    if len(parts) == 3 and parts[2] == "faults" and method in ("PUT", "PATCH", "POST"):
        try:
            cluster.faults.configure(**_body(raw))
        except (ValueError, TypeError) as exc:
            raise errors.bad_request(str(exc)) from None
        return 200, dataclasses.asdict(cluster.faults.snapshot())
    if len(parts) == 3 and parts[2] == "settings" and method in ("PUT", "PATCH", "POST"):
        try:
            cluster.settings.update(**_body(raw))
        except (ValueError, TypeError) as exc:
            raise errors.bad_request(str(exc)) from None
        return 200, dataclasses.asdict(cluster.settings)
    raise errors.path_not_found()
