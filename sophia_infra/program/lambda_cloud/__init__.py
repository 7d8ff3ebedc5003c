"""Lambda Cloud: the GPU hosts themselves as Pulumi resources (see provider.py for why a
dynamic provider), the API client under it, the instance-type catalog and a dated price table."""
