"""Another Pulumi program reading sophia-infra's outputs through a StackReference.

`pulumi config set infraStack <org>/sophia-infra/<stack>` names the stack (default below);
docs/outputs.md lists what it exports. tests/test_outputs_contract.py runs this file under
Pulumi's mock monitor against the real program's outputs."""

import pulumi
import pulumi_kubernetes as k8s

DEFAULT_STACK = "sophia-ai/sophia-infra/production"

infra = pulumi.StackReference(pulumi.Config().get("infraStack") or DEFAULT_STACK)

# Plain outputs arrive plain (unless the stack's hosts are secret: then the addresses are too).
control_plane_ip = infra.require_output("controlPlaneIp")
node_ips = infra.require_output("nodeIps")
mcp_host = node_ips.apply(lambda ips: ips["sophia-mcp"])
slack_mcp_url = infra.require_output("mcpRegistry").apply(lambda registry: registry["slack"])

# The kubeconfig arrives as a secret Output, and anything built from it stays secret.
kubeconfig = infra.require_output("kubeconfig")
cluster = k8s.Provider("sophia", kubeconfig=kubeconfig)

pulumi.export("controlPlaneIp", control_plane_ip)
pulumi.export("mcpHost", mcp_host)
pulumi.export("slackMcpUrl", slack_mcp_url)
