"""Where each node is reached: an address from ESC (`sophia:hosts`) or the address of the
instance the stack launched (an Output, known only once the instance is up).

The script builders take plain `Host`s; `render` runs a builder with every node's resolved
address — at once when all are plain (an existing-hosts stack: the exact strings as before),
inside `.apply` when some come from instances.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, TypeVar, Union

import pulumi

from sophia_infra.program.config.cluster import Host, Node
from sophia_infra.program.config.stack import StackConfig

T = TypeVar("T")


class NodeAddresses:
    def __init__(self, cfg: StackConfig, provisioned: Optional[Mapping[str, pulumi.Output[str]]] = None):
        self._hosts = dict(cfg.hosts)
        self._provisioned = dict(provisioned or {})

    def address(self, node: Node) -> pulumi.Input[str]:
        """The public address: what SSH, tls-san and the outputs use."""
        if node.name in self._provisioned:
            return self._provisioned[node.name]
        return self._hosts[node.name].address

    def private_address(self, node: Node) -> Optional[str]:
        host = self._hosts.get(node.name)
        return host.private_address if host else None

    def render(self, build: Callable[[dict[str, Host]], T]) -> Union[T, pulumi.Output[T]]:
        """`build(hosts)` with every node's Host; an Output when some address is one."""
        if not self._provisioned:
            return build(self._hosts)
        names = list(self._provisioned)

        def resolved(ips: list) -> T:
            hosts = dict(self._hosts)
            for name, ip in zip(names, ips):
                hosts[name] = Host.model_construct(address=ip, private_address=None, flannel_iface=None)
            return build(hosts)

        return pulumi.Output.all(*[self._provisioned[n] for n in names]).apply(resolved)
