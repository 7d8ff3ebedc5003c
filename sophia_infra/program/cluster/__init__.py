"""The K3s cluster on the Lambda Labs hosts: `sophia:k3s:Cluster`."""

from __future__ import annotations

from typing import Callable, Optional

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from sophia_infra.program.cluster import kubeconfig, scripts
from sophia_infra.program.cluster.addresses import NodeAddresses
from sophia_infra.program.cluster.nodes import ControlPlane, Worker
from sophia_infra.program.config.cluster import Node
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.program.cluster.inventory import keep_secret, node_inventory
from sophia_infra.program.lambda_cloud.resources import provision
from sophia_infra.program.secrets import secret

ExtraLabels = Callable[[Node], dict[str, str]]


class Cluster(pulumi.ComponentResource):
    """Control plane first, then every other node in parallel; labels enforced through
    the API; a Kubernetes provider from the kubeconfig for the layers above."""

    def __init__(self, name: str, cfg: StackConfig, extra_labels: Optional[ExtraLabels] = None,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("sophia:k3s:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        private_key = secret("sshPrivateKey")
        # Each node's address: from ESC, or from the Lambda Cloud instance launched for it.
        self.addresses = NodeAddresses(cfg, provision(cfg, private_key, opts=child))
        labels = {n.name: scripts.node_labels(n, (extra_labels or (lambda _: {}))(n)) for n in cfg.nodes}

        # The first server only takes the short form: passwords, generated once and kept. The
        # server token joins servers (and unlocks etcd's secrets); the agent token joins agents
        # only, so a compromised GPU worker cannot join as a server.
        self.token = random.RandomPassword(f"{name}-token", length=48, special=False, opts=child)
        self.agent_token = random.RandomPassword(f"{name}-agent-token", length=48, special=False, opts=child)
        cp = cfg.control_plane
        # The provider marks `result` secret; say so here too, so nothing depends on that.
        token = pulumi.Output.secret(self.token.result)
        agent_token = pulumi.Output.secret(self.agent_token.result)
        if cfg.k3s.installer_sha256 == scripts.UNPINNED_INSTALLER_SHA256:
            pulumi.log.warn(f"stack {pulumi.get_stack()}: sophia:k3s.installerSha256 is not pinned yet (all zeros): every host will refuse to run "
                            "install.sh; set it to the checksum of install.sh at sophia:k3s.version before pulumi up.")
        self.control_plane = ControlPlane(cp.name, cfg, labels[cp.name], token, agent_token, private_key, opts=child,
                                          addresses=self.addresses)

        servers = [n for n in cfg.workers if n.role == "control-plane"]
        agents = [n for n in cfg.workers if n.role == "worker"]
        joined: dict[str, Worker] = {}
        server_stdin = pulumi.Output.secret(pulumi.Output.all(self.control_plane.join_token, agent_token)
                                            .apply(lambda v: scripts.secrets_stdin(v[0], v[1])))
        # One node at a time, servers first, each Ready at the pinned version before the next
        # starts (the upgrade order of k3s-ansible's serial play and system-upgrade-controller's
        # server plan before its agent plan): every node's commands wait for the previous
        # node's Ready wait, which names the version, so a new pin re-runs it as an update and
        # a node that does not come back stops the rollout there. (A first install is serial too.)
        previous: pulumi.Resource = self.control_plane.registered
        for node in [*servers, *agents]:
            stdin = server_stdin if node.role == "control-plane" else self.control_plane.agent_join_token
            joined[node.name] = Worker(node.name, cfg, node, labels[node.name], stdin, private_key,
                                       self.control_plane, after=[previous], opts=child, addresses=self.addresses)
            previous = joined[node.name].membership
        self.workers = joined

        endpoint = self.addresses.render(lambda h: scripts.api_endpoint(cfg, h))
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(self.control_plane.raw_kubeconfig, endpoint).apply(
            lambda v: kubeconfig.rewrite(v[0], v[1], name)))
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            # Certificate or address churn in the kubeconfig must not replace every resource.
            cluster_identifier=f"k3s-{cp.name}",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.control_plane]),
        )

        # Labels given to K3s apply only when a node first registers: enforce them here.
        self.label_patches = {}
        for node in cfg.nodes:
            ready = [self.control_plane.registered] if node.cluster_init else [joined[node.name].membership]
            self.label_patches[node.name] = k8s.core.v1.NodePatch(
                f"{node.name}-labels",
                metadata=k8s.meta.v1.ObjectMetaPatchArgs(
                    name=node.name, labels=labels[node.name],
                    # Take over labels the kubelet set at registration, if they differ.
                    annotations={"pulumi.com/patchForce": "true"}),
                opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=ready),
            )

        inventory = node_inventory(cfg, self.addresses)
        self.outputs = {
            "controlPlaneIp": keep_secret(cfg, self.addresses.address(cp)),
            "nodeIps": keep_secret(cfg, {n: v["address"] for n, v in inventory.items()}),
            "nodes": keep_secret(cfg, inventory),
            "kubeconfig": self.kubeconfig,
        }
        self.register_outputs(self.outputs)
