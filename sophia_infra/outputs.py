"""The stack outputs for other code, at a stable public path (docs/outputs.md is the contract).

    from sophia_infra.outputs import lookup, read_outputs
    mcp_host = lookup(read_outputs("production"), "nodeIps.sophia-mcp")

An operator tool like the others (it runs the Pulumi CLI), kept here so that consumers need
not know where the tools live; the Pulumi program never imports it."""

from sophia_infra.tools.outputs import OutputsError, lookup, parse_outputs, read_outputs

__all__ = ["OutputsError", "lookup", "parse_outputs", "read_outputs"]
