"""The rules of rules.py as pulumi-policy resource validation policies."""

from __future__ import annotations

from pulumi_policy import (EnforcementLevel, Policy, PolicyConfigSchema, ReportViolation, ResourceValidationArgs,
                           ResourceValidationPolicy)

from rules import RULES, Rule


def _validator(rule: Rule):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        # The rule's properties from `--policy-pack-config` (policy/config/<stack>.json), if it takes any.
        config = dict(args.get_config() or {}) if rule.config_schema else None
        for message in rule.run(args.resource_type, dict(args.props), config):
            report_violation(message, None)  # None: the resource being validated
    return validate


def _schema(rule: Rule) -> PolicyConfigSchema | None:
    return PolicyConfigSchema(properties=rule.config_schema["properties"]) if rule.config_schema else None


# The pack is mandatory (__main__.py); an advisory rule reports without blocking unless the
# stack's policy pack config raises its level.
POLICIES: list[Policy] = [ResourceValidationPolicy(name=r.name, description=r.description, validate=_validator(r),
                                                   enforcement_level=EnforcementLevel.ADVISORY if r.advisory else None,
                                                   config_schema=_schema(r))
                          for r in RULES]
