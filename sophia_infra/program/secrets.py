"""Secrets come from ESC-backed stack config only, and stay secret Outputs end to end."""

import pulumi

from sophia_infra.program.config.stack import NAMESPACE


def secret(key: str) -> pulumi.Output[str]:
    """The secret config value `sophia:<key>` (presence was checked by config.load)."""
    return pulumi.Config(NAMESPACE).require_secret(key)
