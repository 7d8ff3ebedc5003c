"""sophia-infra: K3s on Lambda Labs GPU hosts and the Sophia AI platform on top of it."""

import pulumi

from sophia_infra import config, program

stack_config = config.load()  # stops `pulumi preview` with one sentence per problem
for name, value in program.build(stack_config).items():
    pulumi.export(name, value)
