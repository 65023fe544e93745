"""``python -m clusters.agent``: the command line of the pull-mode agent.

Every option can also come from the environment as ``FLEETGATE_AGENT_<OPTION>`` (upper case, ``-`` as
``_``: ``--server`` is ``FLEETGATE_AGENT_SERVER``, ``--state-dir`` is ``FLEETGATE_AGENT_STATE_DIR``); the
command line wins. The bootstrap token itself may be given as ``FLEETGATE_AGENT_BOOTSTRAP_TOKEN`` (never as
an option: command lines are visible to every user of the host).

Exit codes: 0 stopped (SIGTERM/SIGINT) or ``--once`` done; 1 Fleetgate unreachable (``--once``) or another
failure; 2 a configuration error; 3 the credential or the bootstrap token was refused.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

ENV_PREFIX = "FLEETGATE_AGENT_"
DEFAULT_STATE_SECRET = "fleetgate-agent-state"  # noqa: S105 - a Secret name


def configure_django() -> None:
    """Minimal Django settings for the few connector imports that read ``django.conf``: the agent has no
    database and needs no DJANGO_SETTINGS_MODULE (one inherited from the environment is ignored)."""
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            USE_TZ=True,
            INSTALLED_APPS=[],
            DATABASES={},
            FLEETGATE_URL_DENY_CIDRS=[],  # the agent reaches only its own cluster's API server
            LOGGING_CONFIG=None,
        )


def _env(name: str, environ: Mapping[str, str]) -> str | None:
    value = environ.get(ENV_PREFIX + name.upper().replace("-", "_"))
    return value if value not in (None, "") else None


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ

    def default(name: str, fallback: Any = None) -> Any:
        value = _env(name, env)
        return fallback if value is None else value

    p = argparse.ArgumentParser(
        prog="python -m clusters.agent",
        description="Fleetgate's pull-mode agent: asks Fleetgate for its cluster's work over HTTPS and "
        "applies it. Every option can also be set as FLEETGATE_AGENT_<OPTION>.",
    )
    p.add_argument("--server", default=default("server"), help="Fleetgate's base URL (https://...)")
    p.add_argument(
        "--bootstrap-token-file",
        default=default("bootstrap-token-file"),
        help="file holding the one-time bootstrap token (or env FLEETGATE_AGENT_BOOTSTRAP_TOKEN); "
        "used only when no credential is stored",
    )
    p.add_argument(
        "--kubeconfig",
        default=default("kubeconfig"),
        help="kubeconfig of the cluster (inline credentials only); default: the pod's service account",
    )
    p.add_argument("--context", default=default("context", ""), help="kubeconfig context (default: current)")
    state = p.add_mutually_exclusive_group()
    state.add_argument(
        "--state-dir", default=default("state-dir"), help="directory of the credential file (mode 0600)"
    )
    state.add_argument(
        "--state-secret",
        default=default("state-secret"),
        help=f"Secret in the agent's namespace holding the credential (in-cluster; default "
        f"{DEFAULT_STATE_SECRET} when no --state-dir)",
    )
    p.add_argument(
        "--namespace",
        default=default("namespace"),
        help="the agent's namespace for --state-secret (default: the service account's)",
    )
    p.add_argument(
        "--ca-file", default=default("ca-file"), help="CA bundle to verify Fleetgate's certificate"
    )
    p.add_argument(
        "--allow-http",
        action="store_true",
        default=_flag(default("allow-http")),
        help="accept a plain http:// --server (local tests only)",
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=int(default("health-port", 8080)),
        help="port of /healthz and /readyz (0: no probe server)",
    )
    p.add_argument(
        "--health-host",
        default=default("health-host", "0.0.0.0"),  # noqa: S104 - probes
        help="address of the probe server",
    )
    p.add_argument(
        "--poll-wait",
        type=int,
        default=_int(default("poll-wait")),
        help="seconds a poll waits for work (default: what Fleetgate says; 0 with --once)",
    )
    p.add_argument(
        "--report-interval",
        type=int,
        default=_int(default("report-interval")),
        help="seconds between reports (default: what Fleetgate says)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=float(default("timeout", 60)),
        help="read timeout of a call to Fleetgate, seconds (a poll adds its wait)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=float(default("connect-timeout", 10)),
        help="connect timeout of a call to Fleetgate, seconds",
    )
    p.add_argument(
        "--backoff-max",
        type=float,
        default=float(default("backoff-max", 60)),
        help="longest wait between retries when Fleetgate is unreachable, seconds",
    )
    p.add_argument(
        "--once",
        action="store_true",
        default=_flag(default("once")),
        help="one poll, its work and one report, then exit",
    )
    p.add_argument(
        "--log-level", default=default("log-level", "info"), choices=["debug", "info", "warning", "error"]
    )
    p.add_argument("--log-format", default=default("log-format", "json"), choices=["json", "text"])
    return p


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    args = parser(environ).parse_args(argv)
    configure_django()

    from clusters.agent import logs

    logs.configure(args.log_level, args.log_format)
    import logging

    log = logging.getLogger("fleetgate.agent")

    from clusters.agent.agent import EXIT_CONFIG, Agent, Settings
    from clusters.agent.client import AgentClient, Stopped
    from clusters.agent.health import HealthServer, Status
    from clusters.agent.kube import (
        KubeAccess,
        KubeAccessError,
        agent_connector_options,
        in_cluster_credentials,
        in_cluster_namespace,
        kubeconfig_credentials,
    )
    from clusters.agent.state import FileState, SecretState, StateStore

    def fail(message: str) -> int:
        log.error(message, extra={"event": "agent.config_error"})
        return EXIT_CONFIG

    if not args.server:
        return fail("--server (FLEETGATE_AGENT_SERVER) is required")
    try:
        client = AgentClient(
            args.server,
            ca_file=args.ca_file,
            connect_timeout=args.connect_timeout,
            read_timeout=args.timeout,
            allow_http=args.allow_http,
            user_agent=f"fleetgate-agent/{_version()}",
        )
    except ValueError as exc:
        return fail(str(exc))
    if args.ca_file and not os.path.isfile(args.ca_file):
        return fail(f"--ca-file {args.ca_file} does not exist")

    try:
        if args.kubeconfig:
            creds = kubeconfig_credentials(args.kubeconfig, args.context)

            def source() -> Any:
                return creds
        else:
            in_cluster_credentials()  # fail now, with the reason, when not in a pod
            source = in_cluster_credentials
    except KubeAccessError as exc:
        return fail(str(exc))
    cache_dir = os.path.join(args.state_dir, "discovery") if args.state_dir else None
    kube = KubeAccess(source, agent_connector_options(cache_dir))

    store: StateStore
    if args.state_dir:
        store = FileState(args.state_dir)
    else:
        namespace = args.namespace or in_cluster_namespace()
        if not namespace:
            return fail("give --state-dir, or --namespace for the state Secret (not running in a pod)")
        store = SecretState(namespace, args.state_secret or DEFAULT_STATE_SECRET, kube.api_client)

    status = Status()
    stop = threading.Event()
    agent = Agent(
        Settings(
            bootstrap_token=environ.get(ENV_PREFIX + "BOOTSTRAP_TOKEN", ""),
            bootstrap_token_file=args.bootstrap_token_file or "",
            poll_wait=args.poll_wait,
            report_interval=args.report_interval,
            once=args.once,
            backoff_cap=args.backoff_max,
        ),
        client,
        store,
        kube,
        status,
        stop,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("stopping", extra={"event": "agent.stopping", "signal": signal.Signals(signum).name})
        stop.set()
        if agent.idle:
            raise Stopped("signal")  # cut a long poll short; a Work in progress is finished and reported

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    health = None
    if args.health_port:
        try:
            health = HealthServer(status, args.health_host, args.health_port).start()
        except OSError as exc:
            return fail(f"cannot serve probes on {args.health_host}:{args.health_port}: {exc.strerror}")
    log.info(
        "starting",
        extra={
            "event": "agent.starting",
            "server": client.server,
            "version": _version(),
            "state": store.describe(),
            "kube": kube.credentials().server,
            "health_port": health.port if health else None,
            "once": args.once,
        },
    )
    try:
        return agent.run()
    finally:
        if health is not None:
            health.stop()
        client.close()


def _version() -> str:
    from clusters.agent import AGENT_VERSION

    return AGENT_VERSION


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
