"""The options of ``colecionador up``: where Serve listens, how many replicas, the
ingress's prefetch; checked once here, then split per thing (each thing's share is part
of its recipe, so changing one replaces that thing only)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.events.schemas import ALIAS_PATTERN
from services.registry.hard_case_rules import HardCases

API_APP = "api"  # the API's Serve application (as `colecionador serve` names it)
API_ROUTE = "/"


class UpOptions(BaseModel):
    """What ``up`` deploys besides the settings (defaults: ``colecionador serve``'s)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"  # where Serve listens (0.0.0.0: every interface)
    port: int = Field(8000, ge=1, le=65535)
    proxy_location: Literal["EveryNode", "HeadOnly", "Disabled"] = "EveryNode"
    replicas: int = Field(1, ge=1)  # the API's
    num_cpus: float = Field(0.0, ge=0)  # per API replica
    prefetch: int = Field(4, ge=1)  # the ingress's unacked messages
    predict_alias: str = Field("production", pattern=ALIAS_PATTERN)
    predict_replicas: int = Field(1, ge=1)
    predict_num_cpus: float = Field(0.0, ge=0)
    max_batch_size: int = Field(16, ge=1)
    batch_wait_ms: float = Field(5.0, ge=0)
    reload_s: float = Field(2.0, gt=0)
    torch_threads: int = Field(1, ge=1)
    ingress_wait_s: float = Field(30.0, ge=0)  # how long to wait for it to consume
    # production's hard cases (services/registry/hard_case_rules.py): off unless below or
    # sample is set
    hard_cases_below: float | None = Field(None, gt=0, le=1)
    hard_cases_sample: float = Field(0.0, ge=0, le=1)
    hard_cases_max: int = Field(10_000, ge=1)
    hard_cases_max_mb: float = Field(1024.0, gt=0)
    hard_cases_days: float = Field(30.0, gt=0)

    def hard_cases(self) -> HardCases | None:
        """What the predict applications keep of their answers (None: nothing)."""
        rules = HardCases(
            below=self.hard_cases_below,
            sample=self.hard_cases_sample,
            max_count=self.hard_cases_max,
            max_mb=self.hard_cases_max_mb,
            retention_days=self.hard_cases_days,
        )
        return rules if rules.enabled else None

    def serve(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "proxy_location": self.proxy_location}

    def ingress(self) -> dict[str, Any]:
        return {"prefetch": self.prefetch}

    def api(self) -> dict[str, Any]:
        return {"replicas": self.replicas, "num_cpus": self.num_cpus, "route_prefix": API_ROUTE}

    def predict(self, model_name: str) -> dict[str, Any]:
        return {
            "model": model_name,
            "predict_alias": self.predict_alias,
            "predict_replicas": self.predict_replicas,
            "predict_num_cpus": self.predict_num_cpus,
            "max_batch_size": self.max_batch_size,
            "batch_wait_ms": self.batch_wait_ms,
            "reload_s": self.reload_s,
            "torch_threads": self.torch_threads,
            "hard_cases": None if (h := self.hard_cases()) is None else h.model_dump(),
        }
