"""Where the agent keeps its credential between restarts: a file in ``--state-dir`` (mode 0600, in a 0700
directory, written atomically), or, in-cluster, a Secret in the agent's own namespace (``--state-secret``),
read and written with the official ``kubernetes`` client under the agent's service account.

The agent registers (spends its bootstrap token) only when no credential is stored.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

STATE_FILE = "credential.json"
SECRET_KEY = "credential.json"  # noqa: S105 - a key name in the Secret


@dataclass
class Credential:
    """The agent credential Fleetgate issued (register or rotate answer) and the settings it came with.
    ``repr()`` never shows the token."""

    token: str = field(repr=False)
    server: str
    cluster: str = ""
    expires_at: str = ""
    rotate_after: str = ""
    poll_wait: int = 20
    report_interval: int = 60

    @classmethod
    def from_answer(cls, answer: dict[str, Any], server: str) -> Credential:
        """From a ``register``/``rotate`` answer. Raises ValueError when it holds no agent token."""
        token = str(answer.get("token") or "")
        if not token.startswith("fga_a_"):
            raise ValueError("Fleetgate's answer holds no agent credential")
        return cls(
            token=token,
            server=server,
            cluster=str(answer.get("cluster") or ""),
            expires_at=str(answer.get("expires_at") or ""),
            rotate_after=str(answer.get("rotate_after") or ""),
            poll_wait=int(answer.get("poll_wait") or 20),
            report_interval=int(answer.get("report_interval") or 60),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Credential:
        data = json.loads(text)
        if not isinstance(data, dict) or not data.get("token") or not data.get("server"):
            raise ValueError("the stored credential is incomplete")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def due_for_rotation(self, now: datetime | None = None) -> bool:
        """Whether ``rotate_after`` has passed (an unreadable date counts as not due)."""
        when = _parse_time(self.rotate_after)
        return when is not None and (now or datetime.now(UTC)) >= when


def _parse_time(value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class StateStore(Protocol):
    def load(self) -> Credential | None: ...
    def save(self, credential: Credential) -> None: ...
    def clear(self) -> None: ...
    def describe(self) -> str: ...


class StateError(Exception):
    """The state cannot be read or written (permissions, API errors)."""


class FileState:
    """``<state_dir>/credential.json``, mode 0600, the directory 0700; replaced atomically."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / STATE_FILE

    def describe(self) -> str:
        return f"file {self.path}"

    def load(self) -> Credential | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc.strerror}") from None
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(self.path, 0o600)  # tighten a copy restored with looser permissions
        try:
            return Credential.from_json(text)
        except (ValueError, TypeError) as exc:
            raise StateError(f"{self.path} is not a credential file: {exc}") from None

    def save(self, credential: Credential) -> None:
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".credential-", dir=self.dir)  # created 0600
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(credential.to_json())
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StateError(f"cannot write {self.path}: {exc.strerror}") from None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class SecretState:
    """Secret ``name`` in ``namespace`` (the agent's own), key ``credential.json``. ``api_client`` is a
    callable returning a fresh ``kubernetes.client.ApiClient`` (the service account token is re-read)."""

    def __init__(self, namespace: str, name: str, api_client: Any) -> None:
        self.namespace, self.name = namespace, name
        self._api_client = api_client

    def describe(self) -> str:
        return f"Secret {self.namespace}/{self.name}"

    def _core(self) -> Any:
        from kubernetes import client as k8s

        return k8s.CoreV1Api(self._api_client())

    def load(self) -> Credential | None:
        from kubernetes.client.exceptions import ApiException

        try:
            secret = self._core().read_namespaced_secret(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise StateError(f"cannot read {self.describe()}: HTTP {exc.status} {exc.reason}") from None
        data = (secret.data or {}).get(SECRET_KEY)
        if not data:
            return None
        try:
            return Credential.from_json(base64.b64decode(data))
        except (ValueError, TypeError) as exc:
            raise StateError(f"{self.describe()} holds no usable credential: {exc}") from None

    def _body(self, credential: Credential | None) -> dict[str, Any]:
        data = {}
        if credential is not None:
            data[SECRET_KEY] = base64.b64encode(credential.to_json().encode()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {
                    "app.kubernetes.io/name": "fleetgate-agent",
                    "app.kubernetes.io/component": "state",
                },
            },
            "data": data,
        }

    def save(self, credential: Credential) -> None:
        self._write(credential)

    def clear(self) -> None:
        self._write(None)

    def _write(self, credential: Credential | None) -> None:
        from kubernetes.client.exceptions import ApiException

        core = self._core()
        body = self._body(credential)
        try:
            core.replace_namespaced_secret(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status != 404:
                raise StateError(f"cannot write {self.describe()}: HTTP {exc.status} {exc.reason}") from None
            try:
                core.create_namespaced_secret(self.namespace, body)
            except ApiException as again:
                raise StateError(
                    f"cannot create {self.describe()}: HTTP {again.status} {again.reason}"
                ) from None
