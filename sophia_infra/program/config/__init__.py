"""The stack configuration: one module per layer (cluster/stack root, platform, services, provision) over shared models, validators and names."""
