"""Operator tools over the Lambda Cloud API: capacity, cost and dated prices."""
