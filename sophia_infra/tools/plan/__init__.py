"""The offline plan: run the program under Pulumi's mock monitor, no CLI, no credentials."""
