"""sophia-infra: K3s on Lambda Labs GPU hosts and the Sophia AI platform on top of it."""

import pulumi

from sophia_infra import config, program, releases

stack_config = config.load()  # stops `pulumi preview` with one sentence per problem
# The release files too (releases/<stack>/*.yaml), before any resource is registered.
releases.for_stack(stack_config, pulumi.get_stack())
for name, value in program.build(stack_config).items():
    pulumi.export(name, value)
