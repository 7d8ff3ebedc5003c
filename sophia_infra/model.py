"""Shared pieces of the config schema: the strict base model."""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors (typos surface at preview); values are immutable."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
