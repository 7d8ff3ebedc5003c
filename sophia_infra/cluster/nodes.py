"""K3s nodes over SSH: `sophia:k3s:ControlPlane` and `sophia:k3s:Worker`.

Each node is a short chain of remote commands, each idempotent on the host:
firewall -> secrets (token on stdin) -> config.yaml -> install at the pinned version.
Changing a command's inputs runs its `update` (the same idempotent script), never a
replacement, so an unchanged node is untouched and a changed config restarts K3s once.
"""

from __future__ import annotations

from typing import Optional, Sequence

import pulumi
from pulumi_command import remote

from sophia_infra.cluster import scripts
from sophia_infra.config import Node, StackConfig

READ_TOKEN = "read-token"
READ_KUBECONFIG = "read-kubeconfig"


def connection(cfg: StackConfig, node: Node, private_key: pulumi.Input[str]) -> remote.ConnectionArgs:
    return remote.ConnectionArgs(
        host=cfg.host(node).address,
        user=cfg.ssh_user,
        private_key=private_key,
        dial_error_limit=20,  # a freshly booted host may refuse SSH for a while
        per_dial_timeout=15,
    )


def _script_command(name: str, conn: remote.ConnectionArgs, script: str, opts: pulumi.ResourceOptions,
                    delete: Optional[str] = None, stdin: Optional[pulumi.Input[str]] = None,
                    secret_output: bool = False) -> remote.Command:
    """A command whose create and update run the same idempotent script as root."""
    command = scripts.as_root(script)
    return remote.Command(
        name,
        connection=conn,
        create=command,
        update=command,
        delete=scripts.as_root(delete) if delete else None,
        stdin=stdin,
        logging=remote.Logging.NONE if secret_output else None,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=["stdout"] if secret_output else None)),
    )


class K3sNode(pulumi.ComponentResource):
    """What every node has: firewall, secrets, config and install commands."""

    install: remote.Command

    def __init__(self, type_: str, name: str, cfg: StackConfig, node: Node, labels: dict[str, str],
                 secrets_stdin: pulumi.Input[str], private_key: pulumi.Input[str],
                 after: Sequence[pulumi.Resource] = (), opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(type_, name, None, opts)
        self.node = node
        self.connection = connection(cfg, node, private_key)
        child = pulumi.ResourceOptions(parent=self)

        first: list[pulumi.Resource] = list(after)
        if cfg.k3s.firewall:
            self.firewall = _script_command(f"{name}-firewall", self.connection,
                                            scripts.firewall_script(cfg, node), child)
            first.append(self.firewall)
        self.secrets = _script_command(
            f"{name}-secrets", self.connection,
            scripts.write_secrets_script(node, with_etcd_s3=bool(node.cluster_init and cfg.k3s.etcd_s3)),
            pulumi.ResourceOptions(parent=self, depends_on=first), stdin=secrets_stdin)
        self.config_text = scripts.render_config(scripts.k3s_config(cfg, node, labels))
        self.config = _script_command(
            f"{name}-config", self.connection, scripts.apply_config_script(node, self.config_text),
            pulumi.ResourceOptions(parent=self, depends_on=[self.secrets]))
        self.install = _script_command(
            f"{name}-install", self.connection, scripts.install_script(cfg, node),
            pulumi.ResourceOptions(parent=self, depends_on=[self.config]),
            delete=scripts.uninstall_script(node))


class ControlPlane(K3sNode):
    """The first server: embedded etcd, and the source of the join token and kubeconfig."""

    def __init__(self, name: str, cfg: StackConfig, labels: dict[str, str], token: pulumi.Input[str],
                 private_key: pulumi.Input[str], opts: Optional[pulumi.ResourceOptions] = None):
        node = cfg.control_plane
        stdin: pulumi.Input[str] = token
        if cfg.k3s.etcd_s3:
            from sophia_infra.secrets import secret
            stdin = pulumi.Output.concat(token, "\n", secret("etcdS3AccessKey"), "\n", secret("etcdS3SecretKey"))
        super().__init__("sophia:k3s:ControlPlane", name, cfg, node, labels, stdin, private_key, opts=opts)
        after_install = pulumi.ResourceOptions(parent=self, depends_on=[self.install])
        # The API answers before the node object exists: wait for it before labelling it.
        self.registered = _script_command(f"{name}-registered", self.connection,
                                          scripts.wait_registered_script(node.name), after_install)
        # The secure token (K10<ca-hash>::server:<password>) joiners verify the CA with.
        self.read_token = _script_command(f"{name}-{READ_TOKEN}", self.connection,
                                          scripts.read_file_script(scripts.SERVER_TOKEN_PATH),
                                          after_install, secret_output=True)
        self.read_kubeconfig = _script_command(f"{name}-{READ_KUBECONFIG}", self.connection,
                                               scripts.read_file_script(scripts.KUBECONFIG_PATH),
                                               after_install, secret_output=True)
        # Under mocks additional_secret_outputs is not applied: mark them secret here too.
        self.join_token = pulumi.Output.secret(self.read_token.stdout.apply(lambda s: (s or "").strip()))
        self.raw_kubeconfig = pulumi.Output.secret(self.read_kubeconfig.stdout)
        self.register_outputs({"install": self.install.id})


class Worker(K3sNode):
    """A node that joins with the secure token (a GPU worker, or an extra server);
    drained and deleted from the cluster when removed from the config."""

    def __init__(self, name: str, cfg: StackConfig, node: Node, labels: dict[str, str],
                 join_token: pulumi.Input[str], private_key: pulumi.Input[str], control_plane: ControlPlane,
                 after: Sequence[pulumi.Resource] = (), opts: Optional[pulumi.ResourceOptions] = None):
        type_ = "sophia:k3s:Server" if node.role == "control-plane" else "sophia:k3s:Worker"
        super().__init__(type_, name, cfg, node, labels, join_token, private_key,
                         after=[control_plane.install, *after], opts=opts)
        # Runs on the control plane: waits for the node to register; on delete it drains
        # the node and deletes its Node object before the agent is uninstalled.
        # `update` matters: without it a change to the script would replace this resource,
        # and replacing runs the old delete, draining a healthy node.
        self.membership = _script_command(
            f"{name}-membership", control_plane.connection, scripts.wait_registered_script(node.name),
            pulumi.ResourceOptions(parent=self, depends_on=[self.install]),
            delete=scripts.drain_and_delete_script(node.name))
        self.register_outputs({"install": self.install.id})
