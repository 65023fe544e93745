"""The Kubernetes ``url``, ``ip`` and ``cidr`` CEL libraries (k8s.io/apiserver/pkg/cel/library: urls.go,
ip.go, cidr.go), on Python's ``urllib.parse`` and ``ipaddress`` with Go's rules where they differ
(``url()`` takes what Go's ``url.ParseRequestURI`` takes; IPv4-mapped IPv6 addresses and zones are
refused; "global unicast" is Go's definition, which includes private ranges)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from policies.formats.cel.values import CelRuntimeError, opaque, unwrap

URL = "kubernetes.URL"
IP = "net.IP"
CIDR = "net.CIDR"

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*:")

# ---------------------------------------------------------------- url


def _parse_url(text: Any) -> str:
    if not isinstance(text, str):
        raise CelRuntimeError("url() takes a string")
    if (
        not text
        or not (text.startswith("/") or _SCHEME.match(text))
        or any(ord(c) < 0x20 or c == "\x7f" for c in text)
    ):
        raise CelRuntimeError(
            f'URL parse error during conversion from string: parse "{text}": invalid URI for request'
        )
    try:
        parts = urlsplit(text)
        _ = parts.port
    except ValueError as exc:
        raise CelRuntimeError(
            f'URL parse error during conversion from string: parse "{text}": {exc}'
        ) from exc
    return text


def _url(u: Any) -> Any:
    raw = unwrap(u, URL)
    if raw is None:
        raise CelRuntimeError("no such overload: expected a URL")
    return urlsplit(raw)


def url(text: str) -> dict[str, Any]:
    return opaque(URL, _parse_url(text))


def is_url(text: str) -> bool:
    try:
        _parse_url(text)
    except CelRuntimeError:
        return False
    return True


def get_scheme(u: Any) -> str:
    return str(_url(u).scheme)


def get_host(u: Any) -> str:
    netloc = _url(u).netloc
    return str(netloc.rpartition("@")[2])


def get_hostname(u: Any) -> str:
    host = get_host(u)
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rpartition(":")[0] if ":" in host else host


def get_port(u: Any) -> str:
    host = get_host(u)
    tail = host[host.find("]") + 1 :] if host.startswith("[") else host
    return tail.rpartition(":")[2] if ":" in tail else ""


def get_escaped_path(u: Any) -> str:
    return quote(_url(u).path, safe="/:@!$&'()*+,;=-._~%")


def get_query(u: Any) -> dict[str, list[str]]:
    return {k: list(v) for k, v in parse_qs(_url(u).query, keep_blank_values=True).items()}


# ---------------------------------------------------------------- ip


def _parse_ip(text: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(text, str):
        raise CelRuntimeError("ip() takes a string")
    if "%" in text:
        raise CelRuntimeError(f'IP address with zone value is not allowed: "{text}"')
    try:
        addr = ipaddress.ip_address(text)
    except ValueError as exc:
        raise CelRuntimeError(
            f'IP Address "{text}" parse error during conversion from string: {exc}'
        ) from exc
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        raise CelRuntimeError(f'IPv4-mapped IPv6 address "{text}" is not allowed')
    return addr


def _ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = unwrap(value, IP)
    if raw is None:
        raise CelRuntimeError("no such overload: expected an IP address")
    return ipaddress.ip_address(raw)


def ip(text: str) -> dict[str, Any]:
    return opaque(IP, str(_parse_ip(text)))


def is_ip(text: str) -> bool:
    try:
        _parse_ip(text)
    except CelRuntimeError:
        return False
    return True


def ip_is_canonical(text: str) -> bool:
    return str(_parse_ip(text)) == text


def family(value: Any) -> int:
    return _ip(value).version


def is_unspecified(value: Any) -> bool:
    return _ip(value).is_unspecified


def is_loopback(value: Any) -> bool:
    return _ip(value).is_loopback


def _in(addr: Any, net: str) -> bool:
    return addr in ipaddress.ip_network(net)


def is_link_local_multicast(value: Any) -> bool:
    a = _ip(value)
    return _in(a, "224.0.0.0/24") if a.version == 4 else _in(a, "ff02::/16")


def is_link_local_unicast(value: Any) -> bool:
    a = _ip(value)
    return _in(a, "169.254.0.0/16") if a.version == 4 else _in(a, "fe80::/10")


def is_global_unicast(value: Any) -> bool:
    a = _ip(value)
    if a.is_unspecified or a.is_loopback or a.is_multicast or is_link_local_unicast(value):
        return False
    return not (a.version == 4 and str(a) == "255.255.255.255")


# ---------------------------------------------------------------- cidr


def _parse_cidr(text: Any) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if not isinstance(text, str):
        raise CelRuntimeError("cidr() takes a string")
    if "/" not in text:
        raise CelRuntimeError(
            "network address parse error during conversion from string: "
            "network address parse error during conversion from string: "
            f"netip.ParsePrefix(\"{text}\"): no '/'"
        )
    _parse_ip(text.partition("/")[0])
    try:
        return ipaddress.ip_interface(text)
    except ValueError as exc:
        raise CelRuntimeError(f"network address parse error during conversion from string: {exc}") from exc


def _cidr(value: Any) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    raw = unwrap(value, CIDR)
    if raw is None:
        raise CelRuntimeError("no such overload: expected a CIDR")
    return ipaddress.ip_interface(raw)


def cidr(text: str) -> dict[str, Any]:
    return opaque(CIDR, str(_parse_cidr(text)))


def is_cidr(text: str) -> bool:
    try:
        _parse_cidr(text)
    except CelRuntimeError:
        return False
    return True


def contains_ip(value: Any, other: Any) -> bool:
    net = _cidr(value).network
    addr = _parse_ip(other) if isinstance(other, str) else _ip(other)
    return addr.version == net.version and addr in net


def contains_cidr(value: Any, other: Any) -> bool:
    net = _cidr(value).network
    sub = (_parse_cidr(other) if isinstance(other, str) else _cidr(other)).network
    return sub.version == net.version and sub.subnet_of(net)  # type: ignore[arg-type]


def cidr_ip(value: Any) -> dict[str, Any]:
    return opaque(IP, str(_cidr(value).ip))


def masked(value: Any) -> dict[str, Any]:
    return opaque(CIDR, str(_cidr(value).network))


def prefix_length(value: Any) -> int:
    return int(_cidr(value).network.prefixlen)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "url": url,
    "isURL": is_url,
    "getScheme": get_scheme,
    "getHost": get_host,
    "getHostname": get_hostname,
    "getPort": get_port,
    "getEscapedPath": get_escaped_path,
    "getQuery": get_query,
    "ip": ip,
    "isIP": is_ip,
    "ip.isCanonical": ip_is_canonical,
    "family": family,
    "isUnspecified": is_unspecified,
    "isLoopback": is_loopback,
    "isLinkLocalMulticast": is_link_local_multicast,
    "isLinkLocalUnicast": is_link_local_unicast,
    "isGlobalUnicast": is_global_unicast,
    "cidr": cidr,
    "isCIDR": is_cidr,
    "containsIP": contains_ip,
    "containsCIDR": contains_cidr,
    "masked": masked,
    "prefixLength": prefix_length,
}
# cidr.ip() shares its name with the ip() conversion: dispatched in library.py
CIDR_IP = cidr_ip
