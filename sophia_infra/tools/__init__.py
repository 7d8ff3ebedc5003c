"""The operator tools behind `python -m sophia_infra …`: offline plan, audit, backups, outputs, release, etcd restore, capacity, bench. They may import the program; the program never imports them."""
