"""How the program stops under the engine: a `pulumi.RunError` is printed as its message alone,
any other exception with a Python traceback. The config schema raises ConfigError without
importing the Pulumi SDK (the command-line tools read the config without it); the program turns
it into a RunError here."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pulumi

from sophia_infra.program.config.stack import ConfigError


class EngineConfigError(ConfigError, pulumi.RunError):
    """A ConfigError as the engine takes it: one sentence per problem, no traceback."""


@contextmanager
def config_errors_as_run_errors() -> Iterator[None]:
    """Inside: a ConfigError leaves as an EngineConfigError (still a ConfigError to Python)."""
    try:
        yield
    except ConfigError as err:
        if isinstance(err, pulumi.RunError):
            raise
        raise EngineConfigError(err.problems) from None
