"""sophia-infra: the Pulumi program that stands up the Sophia AI platform on K3s."""
