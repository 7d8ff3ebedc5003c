"""The rules of rules.py as pulumi-policy resource validation policies."""

from pulumi_policy import Policy, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from rules import RULES, Rule


def _validator(rule: Rule):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule.check(args.resource_type, dict(args.props)):
            report_violation(message, None)  # None: the resource being validated
    return validate


POLICIES: list[Policy] = [ResourceValidationPolicy(name=r.name, description=r.description, validate=_validator(r)) for r in RULES]
