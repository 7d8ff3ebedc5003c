"""sophia-infra: K3s on Lambda Labs GPU hosts and the Sophia AI platform on top of it."""

import pulumi

from sophia_infra.program.config import stack as config
from sophia_infra.program import stack as program, releases
from sophia_infra.program.errors import config_errors_as_run_errors

# A problem in the stack config or a release file stops `pulumi preview` with one sentence
# each (a RunError: no traceback), before any resource is registered.
with config_errors_as_run_errors():
    stack_config = config.load()
    releases.for_stack(stack_config, pulumi.get_stack())  # the release files (releases/<stack>/*.yaml)
    outputs = program.build(stack_config)
for name, value in outputs.items():
    pulumi.export(name, value)
