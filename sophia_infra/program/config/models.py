"""Shared pieces of the config schema: the strict base model, quantities, resources."""

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sophia_infra.program.config.validators import show

_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?")


class Strict(BaseModel):
    """Unknown keys are errors (typos surface at preview); values are immutable."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def quantity(v: str) -> str:
    """A Kubernetes quantity (500m, 2, 512Mi, 20Gi), or a ValueError that says so."""
    if len(v) > 64 or not _QUANTITY.fullmatch(v):
        raise ValueError(f"{show(v)} is not a Kubernetes quantity; write it like 500m, 2, 512Mi or 20Gi")
    return v


class Resources(Strict):
    """Requests and limits of one container (Kubernetes quantities)."""

    cpu_request: str = Field(default="100m", alias="cpuRequest")
    memory_request: str = Field(default="128Mi", alias="memoryRequest")
    cpu_limit: str = Field(default="500m", alias="cpuLimit")
    memory_limit: str = Field(default="512Mi", alias="memoryLimit")

    _q = field_validator("cpu_request", "memory_request", "cpu_limit", "memory_limit")(
        classmethod(lambda cls, v: quantity(v)))

    def k8s(self) -> dict:
        return {"requests": {"cpu": self.cpu_request, "memory": self.memory_request},
                "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit}}
