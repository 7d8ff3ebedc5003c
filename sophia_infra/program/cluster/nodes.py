"""K3s nodes over SSH: `sophia:k3s:ControlPlane` and `sophia:k3s:Worker`.

Each node is a short chain of remote commands, each idempotent on the host:
firewall -> secrets (token on stdin) -> config.yaml -> install at the pinned version.
Changing a command's inputs runs its `update` (the same idempotent script), never a
replacement, so an unchanged node is untouched and a changed config restarts K3s once.

Only `triggers` replace a command (pulumi-command 1.2.1 marks them replaceOnChanges); a
changed connection just runs `update` on the new host. So a joining node's address is a
trigger of its `install` and `membership`, with delete-before-replace: a new address
drains and deletes the old Node, uninstalls the old host, then installs the new one.
The control plane's install has no such trigger: replacing it would uninstall the only
etcd; moving the control plane is a rebuild from an etcd snapshot, not an address change.

A renamed node is a new node (its name is the K3s node name), on purpose without
`aliases`: the new name's commands run first, then the old name's are deleted; its
membership drains and deletes the old Node object, and its uninstall skips a host whose
config.yaml now names the new node. An alias would keep the old Node object in the cluster.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import pulumi
from pulumi_command import remote

from sophia_infra.program import ssh_keys
from sophia_infra.program.cluster import scripts
from sophia_infra.program.cluster.addresses import NodeAddresses
from sophia_infra.program.config.cluster import Node
from sophia_infra.program.config.stack import StackConfig

READ_TOKEN = "read-token"
READ_AGENT_TOKEN = "read-agent-token"
READ_KUBECONFIG = "read-kubeconfig"
# A freshly booted host may refuse SSH for a while: up to 20 dials of 15 s each.
DIAL_ERROR_LIMIT = 20
PER_DIAL_TIMEOUT = 15


def connection(cfg: StackConfig, node: Node, private_key: pulumi.Input[str],
               addresses: Optional[NodeAddresses] = None) -> remote.ConnectionArgs:
    return remote.ConnectionArgs(
        host=(addresses or NodeAddresses(cfg)).address(node),
        user=cfg.ssh_user,
        private_key=private_key,
        dial_error_limit=DIAL_ERROR_LIMIT,
        per_dial_timeout=PER_DIAL_TIMEOUT,
    )


# Longer than any script's own bounds (scripts.py) plus the SSH dial retries above, so a
# script fails with its own message before Pulumi gives up on it.
COMMAND_TIMEOUTS = pulumi.CustomTimeouts(create="60m", update="60m", delete="30m")


def _script_command(name: str, conn: remote.ConnectionArgs, script: pulumi.Input[str], opts: pulumi.ResourceOptions,
                    delete: Optional[str] = None, stdin: Optional[pulumi.Input[str]] = None,
                    secret_output: bool = False,
                    replace_on: Optional[Sequence[pulumi.Input[Any]]] = None) -> remote.Command:
    """A command whose create and update run the same idempotent script as root.
    `replace_on`: values whose change replaces the command, deleting the old one first."""
    # A script that names a provisioned host's address is an Output (built inside .apply).
    command = scripts.as_root(script) if isinstance(script, str) else pulumi.Output.from_input(script).apply(scripts.as_root)
    return remote.Command(
        name,
        connection=conn,
        create=command,
        update=command,
        delete=scripts.as_root(delete) if delete else None,
        stdin=stdin,
        triggers=list(replace_on) if replace_on else None,
        # Else the previous stdout/stderr travel as environment variables to the next run.
        add_previous_output_in_env=False,
        logging=remote.Logging.NONE if secret_output else None,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=["stdout"] if secret_output else None,
            delete_before_replace=True if replace_on else None,
            custom_timeouts=COMMAND_TIMEOUTS)),
    )


class K3sNode(pulumi.ComponentResource):
    """What every node has: firewall, secrets, config and install commands."""

    install: remote.Command

    def __init__(self, type_: str, name: str, cfg: StackConfig, node: Node, labels: dict[str, str],
                 secrets_stdin: pulumi.Input[str], private_key: pulumi.Input[str],
                 after: Sequence[pulumi.Resource] = (), replace_install_on: Sequence[pulumi.Input[Any]] = (),
                 addresses: Optional[NodeAddresses] = None, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(type_, name, None, opts)
        self.node = node
        addresses = addresses or NodeAddresses(cfg)
        self.connection = connection(cfg, node, private_key, addresses)
        child = pulumi.ResourceOptions(parent=self)

        first: list[pulumi.Resource] = list(after)
        # Exactly the connecting key and sophia:sshAuthorizedKeys may log in (ssh_keys.py): a
        # key rotation goes through this file, never through a new host.
        keys = pulumi.Output.unsecret(pulumi.Output.from_input(private_key).apply(ssh_keys.public_key_of)).apply(
            lambda public: ssh_keys.authorized_keys_script(cfg.ssh_user, ssh_keys.authorized_keys(public, cfg.ssh_authorized_keys)))
        self.authorized_keys = _script_command(f"{name}-authorized-keys", self.connection, keys, child)
        if cfg.k3s.firewall:
            self.firewall = _script_command(f"{name}-firewall", self.connection,
                                            addresses.render(lambda h: scripts.firewall_script(cfg, node, h)), child)
            first.append(self.firewall)
        self.secrets = _script_command(
            f"{name}-secrets", self.connection,
            scripts.write_secrets_script(node, with_etcd_s3=bool(node.cluster_init and cfg.k3s.etcd_s3)),
            pulumi.ResourceOptions(parent=self, depends_on=first), stdin=secrets_stdin)
        self.config_text = addresses.render(lambda h: scripts.render_config(scripts.k3s_config(cfg, node, labels, h)))
        self.config = _script_command(
            f"{name}-config", self.connection, addresses.render(lambda h: scripts.apply_config_script(
                node, scripts.render_config(scripts.k3s_config(cfg, node, labels, h)),
                scripts.node_ip_candidates(h[node.name]))),
            pulumi.ResourceOptions(parent=self, depends_on=[self.secrets]))
        self.install = _script_command(
            f"{name}-install", self.connection, scripts.install_script(cfg, node),
            pulumi.ResourceOptions(parent=self, depends_on=[self.config]),
            delete=scripts.uninstall_script(node), replace_on=replace_install_on)


class ControlPlane(K3sNode):
    """The first server: embedded etcd, and the source of the join tokens and kubeconfig."""

    def __init__(self, name: str, cfg: StackConfig, labels: dict[str, str], token: pulumi.Input[str],
                 agent_token: pulumi.Input[str], private_key: pulumi.Input[str],
                 opts: Optional[pulumi.ResourceOptions] = None, addresses: Optional[NodeAddresses] = None):
        node = cfg.control_plane
        if cfg.k3s.etcd_s3:
            from sophia_infra.program.secrets import secret
            stdin = pulumi.Output.secret(
                pulumi.Output.all(token, agent_token, secret("etcdS3AccessKey"), secret("etcdS3SecretKey"))
                .apply(lambda v: scripts.secrets_stdin(v[0], v[1], (v[2], v[3]))))
        else:
            stdin = pulumi.Output.secret(pulumi.Output.all(token, agent_token)
                                         .apply(lambda v: scripts.secrets_stdin(v[0], v[1])))
        super().__init__("sophia:k3s:ControlPlane", name, cfg, node, labels, stdin, private_key,
                         addresses=addresses, opts=opts)
        after_install = pulumi.ResourceOptions(parent=self, depends_on=[self.install])
        # The API answers before the node object exists: wait for it before labelling it.
        self.registered = _script_command(f"{name}-registered", self.connection,
                                          scripts.wait_registered_script(node.name, version=cfg.k3s.version), after_install)
        # The secure server token (K10<ca-hash>::server:<password>): for extra servers only.
        self.read_token = _script_command(f"{name}-{READ_TOKEN}", self.connection,
                                          scripts.read_file_script(scripts.SERVER_TOKEN_PATH),
                                          after_install, secret_output=True)
        # The secure agent token (K10<ca-hash>::node:<password>) agents join with; read again
        # when the agent token is replaced.
        self.read_agent_token = _script_command(f"{name}-{READ_AGENT_TOKEN}", self.connection,
                                                scripts.read_agent_token_script(), after_install,
                                                secret_output=True, replace_on=[pulumi.Output.secret(agent_token)])
        self.read_kubeconfig = _script_command(f"{name}-{READ_KUBECONFIG}", self.connection,
                                               scripts.read_file_script(scripts.KUBECONFIG_PATH),
                                               after_install, secret_output=True)
        # Under mocks additional_secret_outputs is not applied: mark them secret here too.
        self.join_token = pulumi.Output.secret(self.read_token.stdout.apply(lambda s: (s or "").strip()))
        self.agent_join_token = pulumi.Output.secret(self.read_agent_token.stdout.apply(lambda s: (s or "").strip()))
        self.raw_kubeconfig = pulumi.Output.secret(self.read_kubeconfig.stdout)
        self.register_outputs({"install": self.install.id})


class Worker(K3sNode):
    """A node that joins the first server: a GPU worker with the agent token, or an extra
    server with the server token (and the agent token's password, which every server needs);
    drained and deleted from the cluster when removed from the config."""

    def __init__(self, name: str, cfg: StackConfig, node: Node, labels: dict[str, str],
                 secrets_stdin: pulumi.Input[str], private_key: pulumi.Input[str], control_plane: ControlPlane,
                 after: Sequence[pulumi.Resource] = (), opts: Optional[pulumi.ResourceOptions] = None,
                 addresses: Optional[NodeAddresses] = None):
        type_ = "sophia:k3s:Server" if node.role == "control-plane" else "sophia:k3s:Worker"
        addresses = addresses or NodeAddresses(cfg)
        address = addresses.address(node)
        super().__init__(type_, name, cfg, node, labels, secrets_stdin, private_key,
                         after=[control_plane.install, *after], replace_install_on=[address],
                         addresses=addresses, opts=opts)
        # Runs on the control plane: waits for the node to register; on delete it drains
        # the node and deletes its Node object before the agent is uninstalled.
        # `update` matters: without it a change to the script would replace this resource,
        # and replacing runs the old delete, draining a healthy node.
        # The install's id in the triggers is a property dependency: when the install is
        # replaced (delete first), the engine deletes this command first, so the old Node is
        # drained and deleted before its host is uninstalled and the new host joins.
        self.membership = _script_command(
            f"{name}-membership", control_plane.connection,
            scripts.wait_registered_script(node.name, version=cfg.k3s.version),
            pulumi.ResourceOptions(parent=self, depends_on=[self.install]),
            delete=scripts.drain_and_delete_script(node.name), replace_on=[address, self.install.id])
        self.register_outputs({"install": self.install.id})
