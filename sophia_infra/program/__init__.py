"""The Pulumi program: everything `pulumi up` runs (config schema, cluster, platform with GPU, services, Lambda Cloud provisioning, release files)."""
