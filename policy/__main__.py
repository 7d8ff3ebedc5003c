"""sophia-infra policy pack: `pulumi preview --policy-pack policy`. Every rule is mandatory but the advisory ones (rules.py)."""

from pulumi_policy import EnforcementLevel, PolicyPack

from policies import POLICIES

PolicyPack(name="sophia-infra", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
