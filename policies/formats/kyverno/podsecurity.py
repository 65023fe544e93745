"""``validate.podSecurity``: the Pod Security Standards (baseline, restricted; the latest version's checks)
on a Pod or a pod controller's template, with Kyverno's ``exclude`` entries (``controlName``, with
``images`` for container fields or without for pod fields; ``restrictedField``/``values`` narrow an entry
to those values)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from policies.formats import FormatError
from policies.formats.kyverno.values import wildcard_match

LEVELS = ("privileged", "baseline", "restricted")
_BASELINE_CAPS = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
CONTROLS = (
    "HostProcess",
    "Host Namespaces",
    "Privileged Containers",
    "Capabilities",
    "HostPath Volumes",
    "Host Ports",
    "AppArmor",
    "SELinux",
    "/proc Mount Type",
    "Seccomp",
    "Sysctls",
    "Volume Types",
    "Privilege Escalation",
    "Running as Non-root",
    "Running as Non-root user",
)


@dataclass(frozen=True)
class Violation:
    control: str
    field: str  # e.g. spec.containers[*].securityContext.privileged
    value: Any
    image: str | None = None  # None for a pod-level field

    def describe(self) -> str:
        return f"{self.control}: {self.field}={self.value!r}"


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, Mapping):
                yield key, c


def _sc(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    sc = obj.get("securityContext")
    return sc if isinstance(sc, Mapping) else {}


def check(spec: Mapping[str, Any], annotations: Mapping[str, Any], level: str) -> list[Violation]:
    """The PSS violations of one pod spec at ``level``."""
    if level == "privileged":
        return []
    out: list[Violation] = []
    psc = _sc(spec)
    containers = list(_containers(spec))
    # baseline
    if (psc.get("windowsOptions") or {}).get("hostProcess") is True:
        out.append(Violation("HostProcess", "spec.securityContext.windowsOptions.hostProcess", True))
    for key, c in containers:
        if (_sc(c).get("windowsOptions") or {}).get("hostProcess") is True:
            out.append(
                Violation(
                    "HostProcess",
                    f"spec.{key}[*].securityContext.windowsOptions.hostProcess",
                    True,
                    c.get("image"),
                )
            )
    for ns in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(ns) is True:
            out.append(Violation("Host Namespaces", f"spec.{ns}", True))
    for key, c in containers:
        sc = _sc(c)
        image = str(c.get("image") or "")
        if sc.get("privileged") is True:
            out.append(
                Violation("Privileged Containers", f"spec.{key}[*].securityContext.privileged", True, image)
            )
        for cap in (sc.get("capabilities") or {}).get("add") or []:
            if cap not in _BASELINE_CAPS and (level == "baseline" or cap != "NET_BIND_SERVICE"):
                out.append(
                    Violation("Capabilities", f"spec.{key}[*].securityContext.capabilities.add", cap, image)
                )
        for port in c.get("ports") or []:
            if isinstance(port, Mapping) and port.get("hostPort") not in (None, 0):
                out.append(
                    Violation("Host Ports", f"spec.{key}[*].ports[*].hostPort", port.get("hostPort"), image)
                )
        if sc.get("procMount") not in (None, "Default"):
            out.append(
                Violation(
                    "/proc Mount Type", f"spec.{key}[*].securityContext.procMount", sc.get("procMount"), image
                )
            )
        out += _selinux(sc, f"spec.{key}[*].securityContext.seLinuxOptions", image)
        out += _apparmor(sc, f"spec.{key}[*].securityContext.appArmorProfile.type", image)
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp == "Unconfined":
            out.append(
                Violation("Seccomp", f"spec.{key}[*].securityContext.seccompProfile.type", seccomp, image)
            )
    for v in spec.get("volumes") or []:
        if isinstance(v, Mapping) and v.get("hostPath") is not None:
            out.append(Violation("HostPath Volumes", "spec.volumes[*].hostPath", v.get("name")))
    for k, v in (annotations or {}).items():
        if str(k).startswith("container.apparmor.security.beta.kubernetes.io/"):
            if not (v == "runtime/default" or str(v).startswith("localhost/")):
                out.append(Violation("AppArmor", f"metadata.annotations[{k}]", v))
    out += _selinux(psc, "spec.securityContext.seLinuxOptions", None)
    out += _apparmor(psc, "spec.securityContext.appArmorProfile.type", None)
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp == "Unconfined":
        out.append(Violation("Seccomp", "spec.securityContext.seccompProfile.type", pod_seccomp))
    for s in psc.get("sysctls") or []:
        if isinstance(s, Mapping) and s.get("name") not in _SAFE_SYSCTLS:
            out.append(Violation("Sysctls", "spec.securityContext.sysctls[*].name", s.get("name")))
    if level != "restricted":
        return out
    # restricted
    for v in spec.get("volumes") or []:
        if isinstance(v, Mapping):
            kinds = [k for k in v if k != "name"]
            if any(k not in _RESTRICTED_VOLUMES and k != "hostPath" for k in kinds):
                out.append(Violation("Volume Types", "spec.volumes[*]", v.get("name")))
    windows = (spec.get("os") or {}).get("name") == "windows"
    pod_nonroot = psc.get("runAsNonRoot")
    if psc.get("runAsUser") == 0:
        out.append(Violation("Running as Non-root user", "spec.securityContext.runAsUser", 0))
    if pod_nonroot is False:
        out.append(Violation("Running as Non-root", "spec.securityContext.runAsNonRoot", False))
    for key, c in containers:
        sc = _sc(c)
        image = str(c.get("image") or "")
        if not windows and sc.get("allowPrivilegeEscalation") is not False:
            out.append(
                Violation(
                    "Privilege Escalation",
                    f"spec.{key}[*].securityContext.allowPrivilegeEscalation",
                    sc.get("allowPrivilegeEscalation"),
                    image,
                )
            )
        nonroot = sc.get("runAsNonRoot")
        if nonroot is False or (nonroot is None and pod_nonroot is not True):
            out.append(
                Violation(
                    "Running as Non-root", f"spec.{key}[*].securityContext.runAsNonRoot", nonroot, image
                )
            )
        if sc.get("runAsUser") == 0:
            out.append(
                Violation("Running as Non-root user", f"spec.{key}[*].securityContext.runAsUser", 0, image)
            )
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if (
            not windows
            and seccomp not in ("RuntimeDefault", "Localhost")
            and not (seccomp is None and pod_seccomp in ("RuntimeDefault", "Localhost"))
        ):
            if seccomp != "Unconfined":
                out.append(
                    Violation("Seccomp", f"spec.{key}[*].securityContext.seccompProfile.type", seccomp, image)
                )
        if not windows:
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                out.append(
                    Violation(
                        "Capabilities",
                        f"spec.{key}[*].securityContext.capabilities.drop",
                        caps.get("drop"),
                        image,
                    )
                )
    return out


def _selinux(sc: Mapping[str, Any], field: str, image: str | None) -> list[Violation]:
    opts = sc.get("seLinuxOptions")
    if not isinstance(opts, Mapping):
        return []
    out = []
    if opts.get("type", "") not in _SELINUX_TYPES:
        out.append(Violation("SELinux", f"{field}.type", opts.get("type"), image))
    for k in ("user", "role"):
        if opts.get(k):
            out.append(Violation("SELinux", f"{field}.{k}", opts.get(k), image))
    return out


def _apparmor(sc: Mapping[str, Any], field: str, image: str | None) -> list[Violation]:
    kind = (sc.get("appArmorProfile") or {}).get("type")
    if kind is not None and kind not in ("RuntimeDefault", "Localhost"):
        return [Violation("AppArmor", field, kind, image)]
    return []


@dataclass(frozen=True)
class Exclude:
    control: str
    images: tuple[str, ...]
    restricted_field: str
    values: tuple[str, ...]

    def excuses(self, v: Violation) -> bool:
        if self.control != v.control:
            return False
        if v.image is None:
            if self.images:
                return False
        elif not self.images or not any(wildcard_match(p, v.image) for p in self.images):
            return False
        if self.restricted_field and not wildcard_match(self.restricted_field, v.field):
            return False
        if (
            self.values
            and str(v.value) not in self.values
            and not (isinstance(v.value, list) and all(str(x) in self.values for x in v.value))
        ):
            return False
        return True


@dataclass(frozen=True)
class PodSecurity:
    level: str
    version: str
    exclude: tuple[Exclude, ...]

    def violations(
        self, resource: Mapping[str, Any], extra: tuple[Exclude, ...] = ()
    ) -> list[Violation] | None:
        """The violations not excused (by the rule's ``exclude`` or ``extra``, a PolicyException's
        ``podSecurity``), None when the resource carries no pod spec."""
        spec, annotations = pod_spec(resource)
        if spec is None:
            return None
        excludes = self.exclude + extra
        return [v for v in check(spec, annotations, self.level) if not any(e.excuses(v) for e in excludes)]


def pod_spec(resource: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, Mapping[str, Any]]:
    def dig(doc: Any, *path: str) -> Any:
        for p in path:
            doc = doc.get(p) if isinstance(doc, Mapping) else None
        return doc

    kind = resource.get("kind")
    if kind == "Pod":
        tpl: Any = resource
    elif kind == "CronJob":
        tpl = dig(resource, "spec", "jobTemplate", "spec", "template")
    else:
        tpl = dig(resource, "spec", "template")
    spec = dig(tpl, "spec")
    if not isinstance(spec, Mapping):
        return None, {}
    return spec, dig(tpl, "metadata", "annotations") or {}


def parse_excludes(raw: Any, where: str) -> tuple[Exclude, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise FormatError(f"{where} must be a list")
    excludes = []
    for i, e in enumerate(raw):
        if not isinstance(e, Mapping) or e.get("controlName") not in CONTROLS:
            raise FormatError(f"{where}[{i}].controlName must be one of: {', '.join(CONTROLS)}")
        excludes.append(
            Exclude(
                str(e["controlName"]),
                tuple(str(x) for x in e.get("images") or []),
                str(e.get("restrictedField") or ""),
                tuple(str(x) for x in e.get("values") or []),
            )
        )
    return tuple(excludes)


def parse_pod_security(raw: Any, where: str) -> PodSecurity:
    if not isinstance(raw, Mapping):
        raise FormatError(f"{where} must be a mapping")
    level = str(raw.get("level") or "")
    if level not in LEVELS:
        raise FormatError(f"{where}.level must be privileged, baseline or restricted")
    excludes = parse_excludes(raw.get("exclude"), f"{where}.exclude")
    return PodSecurity(level, str(raw.get("version") or "latest"), excludes)
