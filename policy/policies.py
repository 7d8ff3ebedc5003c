"""The rules of rules.py as pulumi-policy resource validation policies."""

from pulumi_policy import ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from rules import RULES, Rule


def _validator(rule: Rule):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule.check(args.resource_type, args.props):
            report_violation(message)
    return validate


POLICIES = [ResourceValidationPolicy(name=r.name, description=r.description, validate=_validator(r)) for r in RULES]
