"""The agent's loop: register (once), then long-poll Fleetgate for work, apply each Work, report; every
``report_interval`` read what it manages, check drift, self-heal where asked, and report; rotate its
credential when told. See docs/clusters.md, "Installing the agent".
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusters.agent import AGENT_VERSION
from clusters.agent.backoff import Backoff
from clusters.agent.client import AgentClient, ApiError, Stopped, Unauthorized, Unreachable, retrying
from clusters.agent.health import Status
from clusters.agent.kube import KubeAccess
from clusters.agent.state import Credential, StateError, StateStore
from clusters.agent.work import WorkRunner, restrict_rules
from clusters.connector.errors import describe
from clusters.connector.outcomes import apply_outcome, drift_outcome

log = logging.getLogger("fleetgate.agent")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNAUTHORIZED = 0, 1, 2, 3


class Fatal(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Settings:
    """What the loop needs of the command line (see clusters.agent.main)."""

    bootstrap_token: str = ""
    bootstrap_token_file: str = ""
    poll_wait: int | None = None  # None: what Fleetgate said at registration
    report_interval: int | None = None
    once: bool = False
    backoff_base: float = 1.0
    backoff_cap: float = 60.0


class Agent:
    def __init__(
        self,
        settings: Settings,
        client: AgentClient,
        store: StateStore,
        kube: KubeAccess,
        status: Status | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings, self.client, self.store, self.kube = settings, client, store, kube
        self.status = status or Status()
        self.stop = stop or threading.Event()
        self.credential: Credential | None = None
        self.spent_bootstrap = ""  # the bootstrap token this run registered with (not tried twice)
        self.idle = False  # in a long poll (a stop signal may cut it short)
        # --once: a few tries, then give up; otherwise Fleetgate's restarts are waited out
        self.attempts = 5 if settings.once else 0
        self.runner = WorkRunner(
            client,
            kube,
            self.token,
            self.stop,
            self.backoff,
            on_beat=lambda: self.status.update(),
            result_attempts=self.attempts,
        )

    # -- helpers ---------------------------------------------------------------------------------------
    def backoff(self) -> Backoff:
        return Backoff(base=self.settings.backoff_base, cap=self.settings.backoff_cap)

    def token(self) -> str:
        if self.credential is None:
            raise Unauthorized("the agent is not registered", 401)
        return self.credential.token

    def _retry(self, call: Any, what: str) -> Any:
        return retrying(
            call,
            what,
            backoff=self.backoff(),
            stop=self.stop,
            attempts=self.attempts,
            on_retry=self._unreachable,
        )

    def _unreachable(self, error: str) -> None:
        # not ready while Fleetgate is away, but alive: the loop is turning (retrying)
        self.status.update(last_poll_ok=False, last_error=error[:300])

    def bootstrap_token(self) -> str:
        path = self.settings.bootstrap_token_file
        if path:
            try:
                token = Path(path).read_text().strip()
            except OSError:
                token = ""
            if token:
                return token
        return self.settings.bootstrap_token.strip()

    # -- credential ------------------------------------------------------------------------------------
    def ensure_credential(self) -> None:
        try:
            stored = self.store.load()
        except StateError as exc:
            raise Fatal(str(exc), EXIT_CONFIG) from None
        if stored is not None and stored.server.rstrip("/") != self.client.server:
            log.warning(
                "the stored credential belongs to another Fleetgate; registering again",
                extra={"event": "agent.server_changed", "stored_server": stored.server},
            )
            stored = None
        if stored is not None:
            self.credential = stored
            log.info(
                "credential loaded",
                extra={
                    "event": "agent.credential_loaded",
                    "cluster": stored.cluster,
                    "state": self.store.describe(),
                    "expires_at": stored.expires_at,
                },
            )
        else:
            self.register()
        self.status.update(registered=True, cluster=self.credential.cluster if self.credential else "")

    def register(self) -> None:
        bootstrap = self.bootstrap_token()
        if not bootstrap:
            raise Fatal(
                f"no agent credential in {self.store.describe()} and no bootstrap token: give "
                "--bootstrap-token-file or FLEETGATE_AGENT_BOOTSTRAP_TOKEN "
                "(manage.py agent_manifest --bootstrap issues one)",
                EXIT_UNAUTHORIZED,
            )
        if bootstrap == self.spent_bootstrap:
            raise Fatal(
                "the bootstrap token was already spent by this agent and the credential it gave is "
                "refused now: issue a new bootstrap token",
                EXIT_UNAUTHORIZED,
            )
        self.spent_bootstrap = bootstrap
        version = self.kube.version()
        try:
            answer = self._retry(lambda: self.client.register(bootstrap, AGENT_VERSION, version), "register")
        except Unauthorized as exc:
            raise Fatal(
                f"registration refused: the bootstrap token is unknown, used, expired or revoked "
                f"({exc}); issue a new one (manage.py agent_manifest CLUSTER --bootstrap)",
                EXIT_UNAUTHORIZED,
            ) from None
        except ApiError as exc:
            raise Fatal(f"registration refused: {exc}", EXIT_UNAUTHORIZED) from None
        credential = Credential.from_answer(answer, self.client.server)
        self._keep(credential)
        log.info(
            "registered",
            extra={
                "event": "agent.registered",
                "cluster": credential.cluster,
                "expires_at": credential.expires_at,
                "kubernetes_version": version,
                "state": self.store.describe(),
            },
        )

    def _keep(self, credential: Credential) -> None:
        self.credential = credential
        try:
            self.store.save(credential)
        except StateError as exc:
            # the credential works in this process; a restart would need a new bootstrap token
            log.error(
                "the new credential could not be stored; it is used in memory only",
                extra={"event": "agent.state_write_failed", "error": str(exc)},
            )

    def rotate(self) -> None:
        token = self.token()
        answer = self._retry(lambda: self.client.rotate(token), "rotate")
        credential = Credential.from_answer(answer, self.client.server)
        self._keep(credential)
        log.info(
            "credential rotated",
            extra={
                "event": "agent.rotated",
                "expires_at": credential.expires_at,
                "rotate_after": credential.rotate_after,
            },
        )

    def unauthorized(self, exc: Exception) -> None:
        """A call was refused with 401 after registration: register again with a bootstrap token if one is
        available (and not already spent by this run), else end the agent (exit code 3)."""
        log.error(
            "Fleetgate refused the agent credential (revoked, expired or unknown)",
            extra={"event": "agent.unauthorized", "error": str(exc)},
        )
        self.status.update(registered=False, last_poll_ok=False, last_error="credential refused")
        if not self.bootstrap_token() or self.bootstrap_token() == self.spent_bootstrap:
            raise Fatal(
                "the agent credential was refused and no unspent bootstrap token is available: issue "
                "a new bootstrap token (manage.py agent_manifest CLUSTER --bootstrap) and restart the "
                "agent",
                EXIT_UNAUTHORIZED,
            )
        self.credential = None
        self.register()
        self.status.update(registered=True, last_error="")

    # -- the loop --------------------------------------------------------------------------------------
    def poll_wait(self) -> int:
        if self.settings.poll_wait is not None:
            return self.settings.poll_wait
        if self.settings.once:
            return 0
        return self.credential.poll_wait if self.credential else 20

    def report_interval(self) -> float:
        if self.settings.report_interval is not None:
            return float(self.settings.report_interval)
        return float(self.credential.report_interval if self.credential else 60)

    def poll(self) -> dict[str, Any]:
        token, wait = self.token(), self.poll_wait()
        self.idle = True
        try:
            return self._retry(lambda: self.client.work(token, wait), "poll")  # type: ignore[no-any-return]
        finally:
            self.idle = False

    def run(self) -> int:
        """Run until stopped (or one cycle with --once). Returns the exit code."""
        try:
            self.ensure_credential()
            next_report = time.monotonic()
            while not self.stop.is_set():
                try:
                    if self.credential and self.credential.due_for_rotation():
                        self.rotate()
                    if not self.settings.once and time.monotonic() >= next_report:
                        self.report()
                        next_report = time.monotonic() + self.report_interval()
                    answer = self.poll()
                    self.status.update(last_poll_ok=True, last_error="")
                    for work in answer.get("work") or []:
                        if self.stop.is_set():
                            break
                        self.runner.run(work)
                        self.status.update()
                    if answer.get("rotate"):
                        self.rotate()
                    if self.settings.once:
                        self.report()
                        return EXIT_OK
                except Unauthorized as exc:
                    self.unauthorized(exc)
                except Unreachable as exc:  # only with a bounded number of tries (--once)
                    self.status.update(last_poll_ok=False, last_error=str(exc)[:300])
                    raise Fatal(f"Fleetgate is unreachable: {exc}", EXIT_FAILED) from None
                except ApiError as exc:
                    self.status.update(last_poll_ok=False, last_error=str(exc)[:300])
                    log.error("Fleetgate refused a call", extra={"event": "agent.refused", "error": str(exc)})
                    if self.settings.once:
                        raise Fatal(str(exc), EXIT_FAILED) from None
                    self.stop.wait(self.backoff().next())
        except Stopped:
            pass
        except Fatal as exc:
            log.error(str(exc), extra={"event": "agent.exit", "exit_code": exc.code})
            return exc.code
        finally:
            self.kube.close()
        log.info("stopped", extra={"event": "agent.stopped"})
        return EXIT_OK

    # -- reports ---------------------------------------------------------------------------------------
    def report(self) -> int:
        """GET managed, check each mapping (drift, self-heal, live objects), POST report. Returns how many
        mappings were reported; failures other than a refused credential are logged, not raised."""
        try:
            managed = self._retry(lambda: self.client.managed(self.token()), "managed")
            body = build_report(self.kube, managed.get("mappings") or [])
            answer = self._retry(lambda: self.client.report(self.token(), body), "report")
        except (Unauthorized, Stopped):
            raise
        except Exception as exc:
            log.error("report failed", extra={"event": "agent.report_failed", "error": str(exc)[:500]})
            return 0
        drifted = sum(1 for m in body["mappings"] if m["drift"]["drifted"])
        healed = sum(1 for m in body["mappings"] if m.get("healed"))
        log.info(
            "reported",
            extra={
                "event": "agent.reported",
                "mappings": len(body["mappings"]),
                "drifted": drifted,
                "healed": healed,
                "accepted": answer.get("accepted"),
            },
        )
        return len(body["mappings"])


def _stub(ref: dict[str, Any]) -> dict[str, Any]:
    metadata = {"name": ref.get("name", "")}
    if ref.get("namespace"):
        metadata["namespace"] = ref["namespace"]
    return {"apiVersion": ref.get("apiVersion", ""), "kind": ref.get("kind", ""), "metadata": metadata}


def _key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    api = str(obj.get("apiVersion", ""))
    return (
        api.rpartition("/")[0],
        str(obj.get("kind", "")),
        str(meta.get("namespace") or ""),
        str(meta.get("name", "")),
    )


def build_report(kube: KubeAccess, mappings: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``POST report`` body: for each managed mapping its drift (``Connector.drift`` of the applied
    objects, as the push path's drift check), a self-heal (the applied objects applied again, prune off,
    as the push path heals) when asked and drifted, and the live objects read after that (applied objects
    and inventory: what plans and gate reviews diff against)."""
    out = []
    for m in mappings:
        key = str(m.get("mapping") or "")
        namespace = str(m.get("namespace") or "default")
        applied = [a for a in m.get("applied") or [] if isinstance(a, dict)]
        inventory = [r for r in m.get("inventory") or [] if isinstance(r, dict)]
        impersonate = str(m.get("impersonate") or "")
        entry: dict[str, Any] = {
            "mapping": key,
            "live": [],
            "drift": {"drifted": False, "objects": [], "errors": []},
            "healed": None,
        }
        try:
            with kube.connect(impersonate) as connector:
                drift = drift_outcome(connector.drift(applied, default_namespace=namespace))
                entry["drift"] = drift.to_dict()
                if drift.drifted and m.get("self_heal") and applied:
                    healed = apply_outcome(
                        connector.apply(
                            applied,
                            mapping=key,
                            default_namespace=namespace,
                            prune=False,
                            previous_inventory=inventory,
                            force=True,
                            restrict=restrict_rules(m.get("restrict")),  # when Fleetgate sends the allow-list
                        )
                    )
                    # a failed heal is reported too (Fleetgate audits drift.heal_failed with the error)
                    entry["healed"] = {"counts": healed.counts}
                    if not healed.ok:
                        entry["healed"]["error"] = healed.error[:2000] or "the self-heal apply failed"
                    log.info(
                        "self-heal" if healed.ok else "self-heal failed",
                        extra={
                            "event": "drift.healed" if healed.ok else "drift.heal_failed",
                            "mapping": key,
                            "counts": healed.counts,
                            "error": healed.error[:500],
                        },
                    )
                wanted: dict[tuple[str, str, str, str], dict[str, Any]] = {}
                for obj in [*applied, *map(_stub, inventory)]:
                    wanted.setdefault(_key(obj), obj)
                live = connector.read_live(
                    list(wanted.values()), mapping=key, default_namespace=namespace, prune=False
                )
                entry["live"] = [lo.live for lo in live.objects if lo.live is not None]
        except Exception as exc:
            creds = kube.credentials()
            entry["drift"]["errors"].append(describe(exc, creds.server, creds.secrets()).message[:1000])
        out.append(entry)
    return {"agent_version": AGENT_VERSION, "kubernetes_version": kube.version(), "mappings": out}
