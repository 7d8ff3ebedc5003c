"""Where each node is reached: an address from ESC (`sophia:hosts`) or the addresses of the
instance the stack launched (Outputs, known only once the instance is up).

The script builders take plain `Host`s; `render` runs a builder with every node's resolved
addresses — at once when all are plain (an existing-hosts stack: the exact strings as before),
inside `.apply` when some come from instances.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, TypeVar, Union

import pulumi

from sophia_infra.program.config.cluster import Host, Node
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.program.lambda_cloud.resources import Launched

T = TypeVar("T")


class LaunchedHost(Host):
    """A host the stack launched on Lambda Cloud. The API reports a public `ip` and a
    `private_ip`, and does not document which of them the host carries on an interface, so
    neither is K3s's node-ip here: the config script picks the one it finds on an interface
    (scripts.node_ip_choice), and the firewalls admit both."""

    launched_private_ip: Optional[str] = None


class NodeAddresses:
    def __init__(self, cfg: StackConfig, provisioned: Optional[Mapping[str, Launched]] = None):
        self._hosts = dict(cfg.hosts)
        self._provisioned = dict(provisioned or {})

    def address(self, node: Node) -> pulumi.Input[str]:
        """The public address: what SSH, tls-san and the outputs use."""
        if node.name in self._provisioned:
            return self._provisioned[node.name].ip
        return self._hosts[node.name].address

    def private_address(self, node: Node) -> Optional[str]:
        host = self._hosts.get(node.name)
        return host.private_address if host else None

    def render(self, build: Callable[[dict[str, Host]], T]) -> Union[T, pulumi.Output[T]]:
        """`build(hosts)` with every node's Host; an Output when some address is one."""
        if not self._provisioned:
            return build(self._hosts)
        names = list(self._provisioned)
        outputs = [o for n in names for o in (self._provisioned[n].ip, self._provisioned[n].private_ip)]

        def resolved(values: list) -> T:
            hosts = dict(self._hosts)
            for i, name in enumerate(names):
                hosts[name] = LaunchedHost.model_construct(address=values[2 * i], private_address=None,
                                                           flannel_iface=None, launched_private_ip=values[2 * i + 1])
            return build(hosts)

        return pulumi.Output.all(*outputs).apply(resolved)
