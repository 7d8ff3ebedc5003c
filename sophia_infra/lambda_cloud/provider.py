"""State compatibility only: Pulumi stores each dynamic resource's provider by reference
(dill) in the state, and states written before the layout change name this module. Keep it
so that `pulumi refresh`, update and delete of those resources can still load their provider;
the code is in sophia_infra.program.lambda_cloud.provider."""

from sophia_infra.program.lambda_cloud.provider import (  # noqa: F401
    FirewallRulesProvider, InstanceProvider, SshKeyProvider, _Provider)
