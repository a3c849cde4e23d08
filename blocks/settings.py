"""Process-level settings (environment or .env, prefix ``SNAPRESTORE_``).

Connection details live in blocks; these are the knobs of a worker process: how hard to
retry, how long to wait, how much to do at once.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """snaprestore's process settings."""

    model_config = SettingsConfigDict(env_prefix="SNAPRESTORE_", env_file=".env", extra="ignore")

    retries: int = Field(default=3, ge=0, description="retries of a step after a transient error")
    retry_delay_s: float = Field(default=2.0, ge=0, description="first retry delay; doubles")
    retry_jitter: float = Field(default=0.5, ge=0, description="random extra delay, as a fraction")
    max_parallel_vms: int = Field(default=32, ge=1, description="VMs restored at the same time")
    tools_timeout_s: float = Field(default=600, gt=0, description="wait for VMware Tools")
    task_timeout_s: float = Field(default=1800, gt=0, description="wait for a vSphere task")
    pause_timeout_s: int = Field(default=4 * 3600, gt=0, description="wait for a user decision")
    server_id: str = Field(
        default="",
        description="the Prefect server's identity in tags (default: its API URL)",
    )
    # deployments (python -m deployments serve|deploy)
    timezone: str = Field(default="UTC", description="time zone of the schedules")
    drill_cron: str = Field(default="0 2 * * *", description="when the nightly drill runs")
    drill_datastores: list[str] = Field(default_factory=list, description="drilled datastores")
    drill_vms: list[str] = Field(default_factory=list, description="drilled VMs")
    janitor_cron: str = Field(default="15 * * * *", description="when the janitor runs")
    array_concurrency: int = Field(default=4, ge=1, description="array steps at once, per array")
    host_concurrency: int = Field(default=8, ge=1, description="vSphere steps at once, per host")


@lru_cache(maxsize=1)
def settings() -> Settings:
    """Return the settings of this process (read once)."""
    return Settings()
