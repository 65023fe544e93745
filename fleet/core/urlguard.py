"""Refusing URLs that would make the Fleetgate server talk to cloud metadata or link-local addresses (SSRF).

Fleetgate contacts URLs that users give it: repository URLs (git fetch), cluster API URLs (the
Kubernetes client).  Loopback and private addresses stay allowed (sandbox clusters run on 127.0.0.1 and
real clusters live on private networks); what is refused by default is the link-local range, where cloud
metadata services answer (``169.254.169.254``, ``fd00:ec2::254``), and their well-known host names.

* ``check_url`` / ``check_host`` run when a URL is saved (model validators) and again right before a
  connection (``resolve_checked``): the host name is resolved and every address it resolves to must be
  outside the denied networks, so a name that is later re-pointed at a metadata address (DNS rebinding) is
  refused when the connection is made.  Callers connect to the addresses that were checked where they can
  (the Kubernetes connector and git over http(s) do; see their modules).
* Numeric host spellings (``2852039166``, ``0xa9.0xfe.0xa9.0xfe``, ``[::ffff:169.254.169.254]``) are
  resolved like any name, so they cannot slip past; IPv4-mapped IPv6 addresses are checked as IPv4.
* A name that does not resolve when a URL is saved is accepted (it may resolve only from the workers'
  network); it is checked again when the connection is made.

Django-free except ``deny_networks()``, which reads ``settings.FLEETGATE_URL_DENY_CIDRS``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The default of FLEETGATE_URL_DENY_CIDRS: link-local (where cloud metadata services answer) and AWS's
# IPv6 metadata address.
DEFAULT_DENY_CIDRS = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")
# Cloud metadata host names, refused whatever they resolve to.
METADATA_HOSTS = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal",
})
RESOLVE_TIMEOUT = 3.0  # seconds a validator waits for DNS before accepting the name unchecked


class URLRefused(ValueError):
    """A URL points at a denied address or host name.  The message says which and why."""


def parse_networks(specs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``["169.254.0.0/16", "fd00:ec2::254"]`` -> networks; a bad entry raises ValueError naming it."""
    networks: list[IPNetwork] = []
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        try:
            networks.append(ipaddress.ip_network(spec, strict=False))
        except ValueError:
            raise ValueError(f"FLEETGATE_URL_DENY_CIDRS: {spec!r} is not an IP network") from None
    return tuple(networks)


@functools.lru_cache(maxsize=8)
def _parsed(specs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return parse_networks(specs)


def deny_networks() -> tuple[IPNetwork, ...]:
    """The denied networks from ``settings.FLEETGATE_URL_DENY_CIDRS`` (read at each call, parsed once)."""
    from django.conf import settings

    return _parsed(tuple(getattr(settings, "FLEETGATE_URL_DENY_CIDRS", DEFAULT_DENY_CIDRS)))


def denied_network(address: str, networks: Sequence[IPNetwork]) -> IPNetwork | None:
    """The denied network ``address`` (an IP literal) falls in, or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for net in networks:
        if ip.version == net.version and ip in net:
            return net
    return None


def _getaddrinfo(host: str, port: int | None) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in seen:
            seen.append(addr)
    return seen


def resolve(host: str, port: int | None = None, *, timeout: float | None = None) -> list[str]:
    """The addresses ``host`` resolves to (IP literals resolve to themselves); [] when it does not
    resolve (or not within ``timeout`` seconds)."""
    if timeout is None:
        try:
            return _getaddrinfo(host, port)
        except (OSError, UnicodeError):
            return []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(_getaddrinfo, host, port).result(timeout=timeout)
    except (OSError, UnicodeError, concurrent.futures.TimeoutError):
        return []
    finally:
        pool.shutdown(wait=False)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def normalize_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def check_host(host: str, networks: Sequence[IPNetwork], *, port: int | None = None,
               what: str = "URL", resolve_timeout: float | None = RESOLVE_TIMEOUT) -> list[str]:
    """Refuse a metadata host name or a host that resolves into ``networks``; return its addresses
    ([] when it does not resolve)."""
    name = normalize_host(host)
    if not name:
        raise URLRefused(f"The {what} has no host name.")
    if name in METADATA_HOSTS:
        raise URLRefused(f"The {what} points at a cloud metadata service ({name}); Fleetgate does not "
                         "contact it.")
    addresses = [name] if denied_network(name, networks) else resolve(name, port, timeout=resolve_timeout)
    for address in addresses:
        net = denied_network(address, networks)
        if net is not None:
            shown = name if name == address else f"{name} ({address})"
            raise URLRefused(
                f"The {what} points at {shown}, in the denied network {net} (link-local and cloud metadata "
                "addresses; see FLEETGATE_URL_DENY_CIDRS).")
    return addresses


def url_host_port(url: str) -> tuple[str, int | None]:
    """Host and port of a URL or of an scp-like ``user@host:path``; ('', None) when there is none."""
    if "://" not in url:
        rest = url.split("@", 1)[1] if "@" in url.split(":", 1)[0] else url
        host = rest.split(":", 1)[0] if ":" in rest else ""
        return host, 22 if host else None
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"https": 443, "http": 80, "ssh": 22, "git": 9418}.get(parts.scheme)
    return parts.hostname or "", port or default


def check_url(url: str, networks: Sequence[IPNetwork], *, what: str = "URL",
              resolve_timeout: float | None = RESOLVE_TIMEOUT) -> list[str]:
    """``check_host`` for the host of ``url``; returns the addresses checked."""
    host, port = url_host_port(url)
    return check_host(host, networks, port=port, what=what, resolve_timeout=resolve_timeout)


def resolve_checked(host: str, port: int | None, networks: Sequence[IPNetwork], *,
                    what: str = "URL") -> list[str]:
    """At connect time: the addresses of ``host``, every one outside ``networks`` (URLRefused otherwise).
    Connect to one of these, not to the name, so that a second lookup cannot answer differently."""
    return check_host(host, networks, port=port, what=what, resolve_timeout=None)


def guard_pool_manager(manager: Any, networks: Sequence[IPNetwork], *, what: str = "URL") -> None:
    """Make every new connection of a urllib3 ``PoolManager`` resolve its host, refuse a denied address
    (URLRefused) and connect to the addresses it checked.  Redirects open connections through the same
    manager, so they are checked too.  Used by the Kubernetes connector."""
    if not networks:
        return
    from urllib3 import connectionpool
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    nets = tuple(networks)

    def guarded(base: type[HTTPConnection]) -> type[HTTPConnection]:
        class GuardedConnection(base):  # type: ignore[valid-type,misc]
            def _new_conn(self) -> socket.socket:
                host: str = self._dns_host  # type: ignore[has-type]
                addresses = resolve_checked(host, self.port, nets, what=what)
                if not addresses or is_ip_literal(normalize_host(host)):
                    return super()._new_conn()  # type: ignore[no-any-return]
                failure: Exception = NewConnectionError(self, f"no address of {host} answered")
                for address in addresses:
                    self._dns_host = address  # TLS still verifies and sends SNI for self.host
                    try:
                        return super()._new_conn()  # type: ignore[no-any-return]
                    except (NewConnectionError, ConnectTimeoutError) as exc:
                        failure = exc
                    finally:
                        self._dns_host = host
                raise failure

        return GuardedConnection

    class GuardedHTTPPool(connectionpool.HTTPConnectionPool):
        ConnectionCls = guarded(HTTPConnection)

    class GuardedHTTPSPool(connectionpool.HTTPSConnectionPool):
        ConnectionCls = guarded(HTTPSConnection)  # type: ignore[assignment]

    manager.pool_classes_by_scheme = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}
    manager.clear()
