"""Pod Security Standards (baseline, restricted) as Pod Security Admission enforces them at v1.34.

A line-by-line port of the reference implementation, k8s.io/pod-security-admission release-1.34
(policy/check_*.go and policy/registry.go): the same checks, the same version-dependent
details, the same order and the same messages, so a pod this module admits is one the API
server admits under `pod-security.kubernetes.io/enforce: <level>` / `enforce-version: v1.34`.

Works on plain manifests (dicts as YAML/JSON gives them): a field that is absent is Go's nil.
Not applied, as in a default v1.34 API server: the relaxations for user-namespace pods
(alpha gate UserNamespacesPodSecurityStandards, off by default) and for clusters emulating a
version before 1.34 (probe-host check skipped).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

LEVELS = ("privileged", "baseline", "restricted")
VERSION = "v1.34"

# Workload kinds -> path from the object to the pod template (admission/admission.go
# DefaultPodSpecExtractor; PodTemplate is left out: it creates no pod).
_TEMPLATE_PATHS = {
    "ReplicationController": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Deployment": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}

# A check returns None when the pod passes, else (reason, detail) as CheckResult carries them.
CheckFn = Callable[[dict, dict], Any]


# --- helpers (policy/helpers.go, policy/visitor.go) -------------------------------------------

def _join_quote(items: Iterable[str]) -> str:
    items = list(items)
    return '"' + '", "'.join(items) + '"' if items else ""


def _pluralize(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def _containers(items: list[str]) -> str:
    """`container "a"` / `containers "a", "b"`, the phrase every check uses."""
    return f'{_pluralize("container", "containers", len(items))} {_join_quote(items)}'


def _go_quote(value: str) -> str:
    """Go's %q for the plain strings that occur in annotations."""
    return json.dumps(value, ensure_ascii=False)


def _visit_containers(spec: dict) -> list[dict]:
    """initContainers, containers, ephemeralContainers: the order of visitContainers."""
    return [c or {} for key in ("initContainers", "containers", "ephemeralContainers")
            for c in (spec.get(key) or [])]


def _sc(obj: dict) -> dict | None:
    """A pod's or container's securityContext, None when unset (Go nil)."""
    return obj.get("securityContext")


def _is_windows(spec: dict) -> bool:
    return ((spec.get("os") or {}).get("name")) == "windows"


def _name(container: dict) -> str:
    return str(container.get("name", ""))


# --- baseline checks ----------------------------------------------------------------------------

def _app_armor_profile(meta: dict, spec: dict):
    """check_appArmorProfile.go: profile type RuntimeDefault, Localhost or unset; annotations
    runtime/default, localhost/* or empty."""
    allowed_types = ("RuntimeDefault", "Localhost")
    bad_setters: list[str] = []
    bad_values: set[str] = set()
    pod_sc = _sc(spec)
    if pod_sc is not None and pod_sc.get("appArmorProfile") is not None:
        t = pod_sc["appArmorProfile"].get("type") or ""
        if t not in allowed_types:
            bad_setters.append("pod")
            bad_values.add(t)
    bad_containers = []
    for c in _visit_containers(spec):
        sc = _sc(c)
        if sc is not None and sc.get("appArmorProfile") is not None:
            t = sc["appArmorProfile"].get("type") or ""
            if t not in allowed_types:
                bad_containers.append(_name(c))
                bad_values.add(t)
    if bad_containers:
        bad_setters.append(_containers(bad_containers))
    forbidden_annotations = []
    for k, v in ((meta or {}).get("annotations") or {}).items():
        v = "" if v is None else str(v)
        if k.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                v == "" or v == "runtime/default" or v.startswith("localhost/")):
            forbidden_annotations.append(f"{k}={_go_quote(v)}")
    bad_value_list = sorted(bad_values)
    if forbidden_annotations:
        bad_value_list += sorted(forbidden_annotations)
        bad_setters.append(_pluralize("annotation", "annotations", len(forbidden_annotations)))
    if bad_setters:
        return (_pluralize("forbidden AppArmor profile", "forbidden AppArmor profiles", len(bad_value_list)),
                f"{' and '.join(bad_setters)} must not set AppArmor profile type to {_join_quote(bad_value_list)}")
    return None


_BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})


def _capabilities_baseline(meta: dict, spec: dict):
    """check_capabilities_baseline.go: capabilities.add only from the runtime's default set."""
    bad_containers, non_default = [], set()
    for c in _visit_containers(spec):
        sc = _sc(c)
        if sc is None or sc.get("capabilities") is None:
            continue
        added = [str(a) for a in (sc["capabilities"].get("add") or [])]
        bad = [a for a in added if a not in _BASELINE_CAPABILITIES]
        if bad:
            bad_containers.append(_name(c))
            non_default.update(bad)
    if bad_containers:
        return ("non-default capabilities",
                f"{_containers(bad_containers)} must not include {_join_quote(sorted(non_default))} "
                "in securityContext.capabilities.add")
    return None


def _host_namespaces(meta: dict, spec: dict):
    """check_hostNamespaces.go: hostNetwork, hostPID, hostIPC unset or false."""
    used = [f"{field}=true" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field) is True]
    if used:
        return ("host namespaces", ", ".join(used))
    return None


def _host_path_volumes(meta: dict, spec: dict):
    """check_hostPathVolumes.go: no hostPath volume."""
    bad = [str(v.get("name", "")) for v in (spec.get("volumes") or []) if (v or {}).get("hostPath") is not None]
    if bad:
        return ("hostPath volumes", f'{_pluralize("volume", "volumes", len(bad))} {_join_quote(bad)}')
    return None


def _port_number(value: Any) -> int | float:
    """hostPort as an int; manifests built in Python may carry 8080.0."""
    if value is None:
        return 0
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _host_ports(meta: dict, spec: dict):
    """check_hostPorts.go: hostPort undefined or 0 on every port of every container."""
    bad_containers, ports = [], set()
    for c in _visit_containers(spec):
        used = [_port_number((p or {}).get("hostPort")) for p in (c.get("ports") or [])]
        used = [str(p) for p in used if p != 0]
        if used:
            bad_containers.append(_name(c))
            ports.update(used)
    if bad_containers:
        return ("hostPort",
                f'{_containers(bad_containers)} {_pluralize("uses", "use", len(bad_containers))} '
                f'{_pluralize("hostPort", "hostPorts", len(ports))} {", ".join(sorted(ports))}')
    return None


def _handler_hosts(handler: dict | None) -> list[str]:
    """Hosts a probe or lifecycle handler sends to (httpGet.host, tcpSocket.host), "" = the pod."""
    if handler is None:
        return []
    hosts = []
    for kind in ("httpGet", "tcpSocket"):
        action = handler.get(kind)
        if action is not None and action.get("host"):
            hosts.append(str(action["host"]))
    return hosts


def _host_probes_and_host_lifecycle(meta: dict, spec: dict):
    """check_hostProbesAndhostLifecycle.go (new in v1.34): probes and lifecycle handlers must not
    set a host."""
    bad_containers, forbidden = set(), set()
    for c in _visit_containers(spec):
        lifecycle = c.get("lifecycle") or {}
        handlers = [c.get("livenessProbe"), c.get("readinessProbe"), c.get("startupProbe"),
                    lifecycle.get("postStart"), lifecycle.get("preStop")]
        for handler in handlers:
            hosts = _handler_hosts(handler)
            if hosts:
                bad_containers.add(_name(c))
                forbidden.update(hosts)
    if bad_containers:
        return ("probe or lifecycle host",
                f'{_containers(sorted(bad_containers))} {_pluralize("uses", "use", len(bad_containers))} '
                f'{_pluralize("probe or lifecycle host", "probe or lifecycle hosts", len(forbidden))} '
                f"{_join_quote(sorted(forbidden))}")
    return None


def _privileged(meta: dict, spec: dict):
    """check_privileged.go: securityContext.privileged unset or false."""
    bad = [_name(c) for c in _visit_containers(spec) if (_sc(c) or {}).get("privileged") is True]
    if bad:
        return ("privileged", f"{_containers(bad)} must not set securityContext.privileged=true")
    return None


def _proc_mount(meta: dict, spec: dict):
    """check_procMount.go: procMount unset or Default."""
    bad, types = [], set()
    for c in _visit_containers(spec):
        value = (_sc(c) or {}).get("procMount")
        if value is not None and value != "Default":
            bad.append(_name(c))
            types.add(str(value))
    if bad:
        return ("procMount",
                f"{_containers(bad)} must not set securityContext.procMount to {_join_quote(sorted(types))}")
    return None


_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})  # 1.31+


def _se_linux_options(meta: dict, spec: dict):
    """check_seLinuxOptions.go (1.31+): type from the allowed set, user and role unset."""
    bad_types: set[str] = set()
    found = {"user": False, "role": False}

    def valid(opts: dict) -> bool:
        ok = True
        t = opts.get("type") or ""
        if t not in _SELINUX_TYPES:
            ok = False
            bad_types.add(t)
        for field in ("user", "role"):
            if opts.get(field):
                ok = False
                found[field] = True
        return ok

    bad_setters = []
    pod_sc = _sc(spec)
    if pod_sc is not None and pod_sc.get("seLinuxOptions") is not None and not valid(pod_sc["seLinuxOptions"]):
        bad_setters.append("pod")
    bad_containers = [_name(c) for c in _visit_containers(spec)
                      if (_sc(c) or {}).get("seLinuxOptions") is not None and not valid((_sc(c) or {})["seLinuxOptions"])]
    if bad_containers:
        bad_setters.append(_containers(bad_containers))
    if bad_setters:
        bad_data = []
        if bad_types:
            bad_data.append(f'{_pluralize("type", "types", len(bad_types))} {_join_quote(sorted(bad_types))}')
        if found["user"]:
            bad_data.append("user may not be set")
        if found["role"]:
            bad_data.append("role may not be set")
        return ("seLinuxOptions",
                f"{' and '.join(bad_setters)} set forbidden securityContext.seLinuxOptions: {'; '.join(bad_data)}")
    return None


_SECCOMP_TYPES = ("RuntimeDefault", "Localhost")


def _seccomp_setters(spec: dict) -> tuple[list[str], set[str], bool, list[str]]:
    """(bad setters, bad types, pod sets a valid profile, containers that set none)."""
    bad_setters: list[str] = []
    bad_values: set[str] = set()
    pod_seccomp_set = False
    pod_sc = _sc(spec)
    if pod_sc is not None and pod_sc.get("seccompProfile") is not None:
        t = pod_sc["seccompProfile"].get("type") or ""
        if t not in _SECCOMP_TYPES:
            bad_setters.append("pod")
            bad_values.add(t)
        else:
            pod_seccomp_set = True
    explicitly_bad, unset = [], []
    for c in _visit_containers(spec):
        sc = _sc(c)
        if sc is not None and sc.get("seccompProfile") is not None:
            t = sc["seccompProfile"].get("type") or ""
            if t not in _SECCOMP_TYPES:
                explicitly_bad.append(_name(c))
                bad_values.add(t)
        else:
            unset.append(_name(c))
    if explicitly_bad:
        bad_setters.append(_containers(explicitly_bad))
    return bad_setters, bad_values, pod_seccomp_set, unset


def _seccomp_bad_setters(bad_setters: list[str], bad_values: set[str]):
    return ("seccompProfile",
            f"{' and '.join(bad_setters)} must not set securityContext.seccompProfile.type to "
            f"{_join_quote(sorted(bad_values))}")


def _seccomp_profile_baseline(meta: dict, spec: dict):
    """check_seccompProfile_baseline.go (1.19+): if set, RuntimeDefault or Localhost."""
    bad_setters, bad_values, _, _ = _seccomp_setters(spec)
    return _seccomp_bad_setters(bad_setters, bad_values) if bad_setters else None


_SYSCTLS = frozenset({  # sysctlsAllowedV1Dot32, in force for v1.34
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",  # 1.27+
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",  # 1.29+
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",  # 1.32+
})


def _sysctls(meta: dict, spec: dict):
    """check_sysctls.go: only the namespaced, isolated ("safe") sysctls."""
    pod_sc = _sc(spec)
    if pod_sc is None:
        return None
    bad = [str((s or {}).get("name", "")) for s in (pod_sc.get("sysctls") or [])
           if (s or {}).get("name") not in _SYSCTLS]
    return ("forbidden sysctls", ", ".join(bad)) if bad else None


def _windows_host_process(meta: dict, spec: dict):
    """check_windowsHostProcess.go: windowsOptions.hostProcess unset or false."""
    def host_process(sc: dict | None) -> bool:
        return ((sc or {}).get("windowsOptions") or {}).get("hostProcess") is True

    setters = ["pod"] if host_process(_sc(spec)) else []
    bad = [_name(c) for c in _visit_containers(spec) if host_process(_sc(c))]
    if bad:
        setters.append(_containers(bad))
    if setters:
        return ("hostProcess", f"{' and '.join(setters)} must not set securityContext.windowsOptions.hostProcess=true")
    return None


# --- restricted checks ---------------------------------------------------------------------------

def _allow_privilege_escalation(meta: dict, spec: dict):
    """check_allowPrivilegeEscalation.go (1.25+): false on every container; Windows pods exempt."""
    if _is_windows(spec):
        return None
    bad = [_name(c) for c in _visit_containers(spec) if (_sc(c) or {}).get("allowPrivilegeEscalation") is not False]
    if bad:
        return ("allowPrivilegeEscalation != false",
                f"{_containers(bad)} must set securityContext.allowPrivilegeEscalation=false")
    return None


def _capabilities_restricted(meta: dict, spec: dict):
    """check_capabilities_restricted.go (1.25+): drop ALL, add at most NET_BIND_SERVICE;
    Windows pods exempt."""
    if _is_windows(spec):
        return None
    missing_drop_all, adding_forbidden, forbidden = [], [], set()
    for c in _visit_containers(spec):
        sc = _sc(c)
        if sc is None or sc.get("capabilities") is None:
            missing_drop_all.append(_name(c))
            continue
        caps = sc["capabilities"]
        if "ALL" not in (caps.get("drop") or []):
            missing_drop_all.append(_name(c))
        bad = [str(a) for a in (caps.get("add") or []) if a != "NET_BIND_SERVICE"]
        if bad:
            adding_forbidden.append(_name(c))
            forbidden.update(bad)
    details = []
    if missing_drop_all:
        details.append(f'{_containers(missing_drop_all)} must set securityContext.capabilities.drop=["ALL"]')
    if adding_forbidden:
        details.append(f"{_containers(adding_forbidden)} must not include {_join_quote(sorted(forbidden))} "
                       "in securityContext.capabilities.add")
    return ("unrestricted capabilities", "; ".join(details)) if details else None


_RESTRICTED_VOLUME_SOURCES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image",
                              "persistentVolumeClaim", "projected", "secret")
_OTHER_VOLUME_SOURCES = ("hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi",
                         "glusterfs", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile",
                         "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "portworxVolume",
                         "scaleIO", "storageos")


def _restricted_volumes(meta: dict, spec: dict):
    """check_restrictedVolumes.go: only the allowed inline volume sources (replaces hostPathVolumes)."""
    bad_volumes, bad_types = [], set()
    for volume in spec.get("volumes") or []:
        volume = volume or {}
        if any(volume.get(source) is not None for source in _RESTRICTED_VOLUME_SOURCES):
            continue
        bad_volumes.append(str(volume.get("name", "")))
        bad_types.add(next((s for s in _OTHER_VOLUME_SOURCES if volume.get(s) is not None), "unknown"))
    if bad_volumes:
        return ("restricted volume types",
                f'{_pluralize("volume", "volumes", len(bad_volumes))} {_join_quote(bad_volumes)} '
                f'{_pluralize("uses", "use", len(bad_volumes))} '
                f'{_pluralize("restricted volume type", "restricted volume types", len(bad_types))} '
                f"{_join_quote(sorted(bad_types))}")
    return None


def _run_as_non_root(meta: dict, spec: dict):
    """check_runAsNonRoot.go: true at pod level or on every container; false nowhere."""
    bad_setters = []
    pod_non_root = False
    pod_value = (_sc(spec) or {}).get("runAsNonRoot")
    if pod_value is not None:
        if not pod_value:
            bad_setters.append("pod")
        else:
            pod_non_root = True
    explicitly_bad, implicitly_bad = [], []
    for c in _visit_containers(spec):
        value = (_sc(c) or {}).get("runAsNonRoot")
        if value is not None:
            if not value:
                explicitly_bad.append(_name(c))
        elif not pod_non_root:
            implicitly_bad.append(_name(c))
    if explicitly_bad:
        bad_setters.append(_containers(explicitly_bad))
    if bad_setters:
        return ("runAsNonRoot != true", f"{' and '.join(bad_setters)} must not set securityContext.runAsNonRoot=false")
    if implicitly_bad:
        return ("runAsNonRoot != true", f"pod or {_containers(implicitly_bad)} must set securityContext.runAsNonRoot=true")
    return None


def _is_root(value: Any) -> bool:
    return value is not None and not isinstance(value, bool) and value == 0


def _run_as_user(meta: dict, spec: dict):
    """check_runAsUser.go (1.23+): runAsUser never 0."""
    bad_setters = ["pod"] if _is_root((_sc(spec) or {}).get("runAsUser")) else []
    bad = [_name(c) for c in _visit_containers(spec) if _is_root((_sc(c) or {}).get("runAsUser"))]
    if bad:
        bad_setters.append(_containers(bad))
    if bad_setters:
        return ("runAsUser=0", f"{' and '.join(bad_setters)} must not set runAsUser=0")
    return None


def _seccomp_profile_restricted(meta: dict, spec: dict):
    """check_seccompProfile_restricted.go (1.25+): RuntimeDefault or Localhost at pod level or on
    every container (replaces seccompProfile_baseline); Windows pods exempt."""
    if _is_windows(spec):
        return None
    bad_setters, bad_values, pod_seccomp_set, unset = _seccomp_setters(spec)
    if bad_setters:
        return _seccomp_bad_setters(bad_setters, bad_values)
    if unset and not pod_seccomp_set:
        return ("seccompProfile",
                f'pod or {_containers(unset)} must set securityContext.seccompProfile.type to '
                '"RuntimeDefault" or "Localhost"')
    return None


# --- registry (policy/registry.go) ---------------------------------------------------------------

# Check ID -> function, as registered for v1.34. Order of evaluation: baseline IDs sorted, then
# restricted IDs sorted (byte order, as Go's sort.Slice on strings).
_BASELINE: dict[str, CheckFn] = {
    "appArmorProfile": _app_armor_profile,
    "capabilities_baseline": _capabilities_baseline,
    "hostNamespaces": _host_namespaces,
    "hostPathVolumes": _host_path_volumes,
    "hostPorts": _host_ports,
    "hostProbesAndHostLifecycle": _host_probes_and_host_lifecycle,
    "privileged": _privileged,
    "procMount": _proc_mount,
    "seLinuxOptions": _se_linux_options,
    "seccompProfile_baseline": _seccomp_profile_baseline,
    "sysctls": _sysctls,
    "windowsHostProcess": _windows_host_process,
}
_RESTRICTED: dict[str, CheckFn] = {
    "allowPrivilegeEscalation": _allow_privilege_escalation,
    "capabilities_restricted": _capabilities_restricted,
    "restrictedVolumes": _restricted_volumes,
    "runAsNonRoot": _run_as_non_root,
    "runAsUser": _run_as_user,
    "seccompProfile_restricted": _seccomp_profile_restricted,
}
# Restricted checks that take the place of a baseline check (OverrideCheckIDs).
_OVERRIDES = {
    "capabilities_restricted": "capabilities_baseline",
    "restrictedVolumes": "hostPathVolumes",
    "seccompProfile_restricted": "seccompProfile_baseline",
}


def checks(level: str) -> list[str]:
    """IDs of the checks `level` runs at v1.34, in the order the admission plugin runs them."""
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r}: use one of {', '.join(LEVELS)}")
    if level == "privileged":
        return []
    if level == "baseline":
        return sorted(_BASELINE)
    overridden = set(_OVERRIDES.values())
    return sorted(i for i in _BASELINE if i not in overridden) + sorted(_RESTRICTED)


def _check(check_id: str) -> CheckFn:
    return _BASELINE.get(check_id) or _RESTRICTED[check_id]


def _with_api_defaults(spec: dict) -> dict:
    """The pod spec as admission sees it: the API server defaults a Pod before admitting it
    (pkg/apis/core/v1/defaults.go). Two defaults change a verdict: a volume with no source is an
    emptyDir (SetDefaults_Volume), and with hostNetwork every container port is also a host port
    (SetDefaults_Pod, containers and init containers). The input is not modified."""
    spec = dict(spec)
    if spec.get("volumes"):
        spec["volumes"] = [v if any(src is not None for k, src in (v or {}).items() if k != "name")
                           else {**(v or {}), "emptyDir": {}} for v in spec["volumes"]]
    if spec.get("hostNetwork") is True:
        for key in ("containers", "initContainers"):
            if spec.get(key):
                spec[key] = [{**c, "ports": [
                    {**p, "hostPort": p.get("containerPort")} if _port_number(p.get("hostPort")) == 0 else p
                    for p in (c.get("ports") or [])]} if (c or {}).get("ports") else c
                    for c in spec[key]]
    return spec


def violations(pod_spec: dict, level: str, pod_metadata: dict | None = None) -> list[str]:
    """Every check of `level` that the pod spec fails, as "reason (detail)", the text the admission
    plugin joins into 'violates PodSecurity "restricted:v1.34": ...'. [] when admitted."""
    spec = _with_api_defaults(pod_spec or {})
    meta = pod_metadata or {}
    found = []
    for check_id in checks(level):
        result = _check(check_id)(meta, spec)
        if result is not None:
            reason, detail = result
            found.append(f"{reason} ({detail})" if detail else reason)
    return found


def _description(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "?")
    namespace = meta.get("namespace")
    return f"{obj.get('kind')} {namespace}/{name}" if namespace else f"{obj.get('kind')} {name}"


def pod_specs(obj: dict) -> list[tuple[str, dict, dict]]:
    """(description, pod metadata, pod spec) of every pod a workload object creates: Pod, Deployment,
    ReplicaSet, StatefulSet, DaemonSet, Job, CronJob (jobTemplate.spec.template), ReplicationController.
    Other kinds -> []. Description like "Deployment monitoring/kube-prometheus-stack-operator"."""
    if not isinstance(obj, dict):
        return []
    kind = obj.get("kind")
    if kind == "Pod":
        return [(_description(obj), obj.get("metadata") or {}, obj.get("spec") or {})]
    path = _TEMPLATE_PATHS.get(str(kind))
    if path is None:
        return []
    template: Any = obj
    for key in path:
        template = (template or {}).get(key)
    if template is None:
        return []
    return [(_description(obj), template.get("metadata") or {}, template.get("spec") or {})]


def admitted(obj: dict, level: str) -> list[str]:
    """For a workload object: every violation of every pod template, prefixed with the description.
    [] when every pod it creates is admitted at `level`."""
    return [f"{description}: {v}"
            for description, meta, spec in pod_specs(obj)
            for v in violations(spec, level, meta)]
