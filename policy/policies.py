"""The rules of rules.py as pulumi-policy resource validation policies."""

from pulumi_policy import EnforcementLevel, Policy, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from rules import RULES, Rule


def _validator(rule: Rule):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule.check(args.resource_type, dict(args.props)):
            report_violation(message, None)  # None: the resource being validated
    return validate


# The pack is mandatory (__main__.py); an advisory rule reports without blocking.
POLICIES: list[Policy] = [ResourceValidationPolicy(name=r.name, description=r.description, validate=_validator(r),
                                                   enforcement_level=EnforcementLevel.ADVISORY if r.advisory else None)
                          for r in RULES]
