"""sophia-infra: K3s on Lambda Labs GPU hosts and the Sophia AI platform on top of it."""

import pulumi

from sophia_infra.program.config import stack as config
from sophia_infra.program import stack as program, releases

stack_config = config.load()  # stops `pulumi preview` with one sentence per problem
# The release files too (releases/<stack>/*.yaml), before any resource is registered.
releases.for_stack(stack_config, pulumi.get_stack())
for name, value in program.build(stack_config).items():
    pulumi.export(name, value)
