"""The cluster layer's settings: the nodes (role, arch, GPUs, labels, taints, how the host
comes to be), their addresses from ESC, and K3s (version, etcd snapshots, networking, the
host firewall). The root schema (config/stack.py) composes them with the other layers'."""

from __future__ import annotations

import ipaddress
import re
import typing
from typing import TYPE_CHECKING, Literal, Optional

from pydantic import Field, StrictInt, field_validator

from sophia_infra.program.config import names
from sophia_infra.program.config import provision as lambda_config
from sophia_infra.program.config import validators as check
from sophia_infra.program.config.models import Strict as _Strict

if TYPE_CHECKING:
    from sophia_infra.program.config.stack import StackConfig

# GPU types the platform's hosts carry. RTX6000 is the control plane's card.
GPU_TYPES = ("GH200", "A100", "A6000", "A10", "RTX6000")

# Every value's grammar (what K3s, Kubernetes, Helm, ufw accept) lives in sophia_infra.program.config.validators.
# apiAllowFrom: [any] opens the API server to every address, explicitly.
ANY = "any"


def is_address(value: str) -> bool:
    """An IP address or a DNS name (a dotted quad must be a valid IPv4 address)."""
    return check.is_address(value)


# Node labels the program sets (placement, device plugin) or Kubernetes and K3s own.
PROGRAM_LABELS = (names.GPU_TYPE_LABEL, names.GPU_PRESENT_LABEL, names.ROLE_LABEL,
                  names.DEVICE_PLUGIN_CONFIG_LABEL)
_RESERVED_LABEL_DOMAINS = ("kubernetes.io", "k8s.io", "k3s.io", "k3s.cattle.io")


def reserved_label(key: str) -> bool:
    """A label key a node's own `labels` may not set: the program's, or under Kubernetes',
    K3s' or NVIDIA's GPU prefixes (node-role.kubernetes.io/*, nvidia.com/gpu.*)."""
    prefix = key.rpartition("/")[0]
    return (key in PROGRAM_LABELS or key.startswith("nvidia.com/gpu")
            or any(prefix == d or prefix.endswith("." + d) for d in _RESERVED_LABEL_DOMAINS))


class NodeGpu(_Strict):
    type: str
    count: StrictInt = Field(default=1, ge=1, le=16)
    # Time-slicing replicas per physical GPU (1 = no sharing).
    sharing: StrictInt = Field(default=1, ge=1, le=64)

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in GPU_TYPES:
            raise ValueError(f"unknown GPU type '{v}'; use one of {', '.join(GPU_TYPES)}")
        return v

    @property
    def capacity(self) -> int:
        """Schedulable `nvidia.com/gpu` units this node advertises."""
        return self.count * self.sharing


class Node(_Strict):
    name: str
    role: Literal["control-plane", "worker"]
    # The one control-plane node that starts the embedded etcd cluster.
    cluster_init: bool = Field(default=False, alias="clusterInit")
    arch: Literal["amd64", "arm64"]
    gpu: Optional[NodeGpu] = None
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[str] = Field(default_factory=list)
    # Launch the host on Lambda Cloud instead of reading its address from sophia:hosts.
    provision: Optional[lambda_config.Provision] = None

    @field_validator("name")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        return check.dns_label(v, "node name")

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            check.label_key(key)
            check.label_value(value)
            if reserved_label(key):
                raise ValueError(f"'{key}' is a label this program (or Kubernetes, K3s) sets itself; placement and the "
                                 "device plugin rely on it, so remove it from the node's labels")
        return v

    @field_validator("taints")
    @classmethod
    def _taint_form(cls, v: list[str]) -> list[str]:
        for taint in v:
            check.taint(taint)
        return v

    @property
    def platform(self) -> str:
        return f"linux/{self.arch}"


class Host(_Strict):
    """A node's addresses, from ESC (never from the stack file or code)."""

    address: str
    # K3s's node-ip (and then `address` is its node-external-ip): both must be IP addresses.
    private_address: Optional[str] = Field(default=None, alias="privateAddress")
    flannel_iface: Optional[str] = Field(default=None, alias="flannelIface")

    @field_validator("address", "private_address")
    @classmethod
    def _is_address(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else check.host_address(v)

    @field_validator("flannel_iface")
    @classmethod
    def _iface(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else check.interface_name(v)


class EtcdS3(_Strict):
    bucket: str
    endpoint: str
    folder: str = "etcd-snapshots"
    region: Optional[str] = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        return check.s3_endpoint(v)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        return check.s3_bucket(v)

    @field_validator("folder")
    @classmethod
    def _folder(cls, v: str) -> str:
        return check.s3_prefix(v)

    @field_validator("region")
    @classmethod
    def _region(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else check.s3_region(v)


class K3s(_Strict):
    version: str
    # Optional DNS name for the API server: added to tls-san and used in the kubeconfig.
    api_dns_name: Optional[str] = Field(default=None, alias="apiDnsName")
    secrets_encryption: bool = Field(default=True, alias="secretsEncryption")
    etcd_snapshot_schedule: check.Cron5 = Field(default="0 */6 * * *", alias="etcdSnapshotSchedule")
    etcd_snapshot_retention: StrictInt = Field(default=28, ge=1, le=1000, alias="etcdSnapshotRetention")
    etcd_s3: Optional[EtcdS3] = Field(default=None, alias="etcdS3")
    flannel_backend: Literal["vxlan", "wireguard-native"] = Field(default="vxlan", alias="flannelBackend")
    # Pod and service ranges: given to K3s, opened in the firewall, used by NetworkPolicies.
    cluster_cidr: str = Field(alias="clusterCidr")
    service_cidr: str = Field(alias="serviceCidr")
    firewall: bool = False
    # Sources allowed to reach the API server (6443) when the firewall is on: CIDRs, or
    # [any] on purpose. Empty means any as well, which a production stack may not leave implicit.
    api_allow_from: list[str] = Field(default_factory=list, alias="apiAllowFrom")
    install_nvidia_toolkit: bool = Field(default=False, alias="installNvidiaToolkit")
    # SHA-256 of install.sh at `version` (the k3s repository's install.sh.sha256sum at that
    # tag): the hosts run the installer as root only if it matches. Change it with `version`.
    installer_sha256: str = Field(alias="installerSha256")

    @field_validator("installer_sha256")
    @classmethod
    def _sha256(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", v):
            raise ValueError("is not a SHA-256 (64 hexadecimal digits); set it to the checksum of install.sh at sophia:k3s.version, e.g. from https://raw.githubusercontent.com/k3s-io/k3s/<version>/install.sh.sha256sum")
        return v.lower()

    @field_validator("cluster_cidr", "service_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            ipaddress.ip_network(v)
        except ValueError:
            raise ValueError(f"'{v}' is not a network in CIDR form; write it like 10.42.0.0/16") from None
        return v

    @field_validator("api_allow_from")
    @classmethod
    def _sources(cls, v: list[str]) -> list[str]:
        v = [ANY if src.strip().lower() == ANY else src for src in v]
        if ANY in v:
            if len(v) > 1:
                raise ValueError("'any' already allows every address; write either apiAllowFrom: [any] or a list of CIDRs, not both")
            return v  # the firewall renders it as `ufw allow ... from any`
        for src in v:
            try:
                ipaddress.ip_network(src, strict=False)
            except ValueError:
                raise ValueError(f"'{src}' is not an address or CIDR range; list the networks allowed to reach the API") from None
        return v

    @property
    def api_open_to_any(self) -> bool:
        """Whether every address may reach the API server (6443): said, or left empty."""
        return not self.api_allow_from or self.api_allow_from == [ANY]

    @field_validator("version")
    @classmethod
    def _pinned(cls, v: str) -> str:
        return check.k3s_version(v)

    @field_validator("api_dns_name")
    @classmethod
    def _dns(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not is_address(v):
            raise ValueError(f"'{v}' is not a DNS name; give the API server's DNS name or leave it out")
        return v

    # Networks no one reaches from the internet: RFC 1918, shared address space (CGNAT,
    # tailnets), IPv6 unique local. Anything else, a DNS name included, counts as public.
    PRIVATE_NETWORKS: typing.ClassVar[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = tuple(
        ipaddress.ip_network(n) for n in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))

    @classmethod
    def is_private_network_address(cls, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in cls.PRIVATE_NETWORKS)

    @staticmethod
    def _nodes(names: list[str], one: str = "has", many: str = "have") -> str:
        return f"node {names[0]} {one}" if len(names) == 1 else f"nodes {', '.join(names)} {many}"

    def host_exposure(self, cfg: "StackConfig") -> list[str]:
        """Least privilege on the hosts: what the nodes' addresses expose without the host
        firewall or overlay encryption. Messages name nodes, never addresses (maybe secret)."""
        problems: list[str] = []
        # A node without an ESC address is launched on Lambda Cloud: a public address.
        public = [n.name for n in cfg.nodes if n.name not in cfg.hosts
                  or not self.is_private_network_address(cfg.hosts[n.name].address)]
        if not self.firewall and public:
            problems.append(
                f"sophia:k3s.firewall: is false, but {self._nodes(public)} a public address, where the "
                "kubelet (10250), node-exporter (9100) and the flannel port listen on every address and servers "
                "add etcd (2379-2380) and the API (6443), so the internet reaches them (a privateAddress "
                "does not close them); set firewall: true (with apiAllowFrom for the API), or put every node's "
                "address in a private network (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7).")
        over_public = [n for n in public if n not in cfg.hosts or cfg.hosts[n].private_address is None]
        if self.flannel_backend == "vxlan" and over_public:
            problems.append(
                f"sophia:k3s.flannelBackend: vxlan carries pod traffic unencrypted and unauthenticated "
                f"(8472/udp), and {self._nodes(over_public, 'reaches', 'reach')} the other nodes only over a public address; "
                "set flannelBackend: wireguard-native, or give every node a privateAddress on a private network.")
        return problems
