"""Settings base: one env prefix per service (`ITSM_INCIDENTS_…`), falling back to the
platform-wide `ITSM_…` variable, so common values (broker, database, signing key) are set once."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ITSM_", extra="ignore")

    service_name: str = "itsm"
    mongo_url: str = "mongodb://127.0.0.1:27017"
    mongo_database: str = "itsm"
    mongo_timeout_ms: int = Field(5_000, ge=100)
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_partitions: int = Field(6, ge=1, le=1000)
    topic_replication_factor: int = Field(1, ge=1, le=7)  # 3 in production clusters
    # The relay is nudged by every write; the poll is the safety net for events a crash left
    # behind, and a scan is costly on FerretDB (no pushdown), so it is not too frequent.
    relay_poll_interval: float = Field(5.0, gt=0)
    relay_batch_size: int = Field(500, ge=1)
    # Ticket numbers reserved per counter update (gaps of up to this after a restart).
    number_block_size: int = Field(50, ge=1, le=10_000)

    # Fail closed: production validates against an OIDC issuer unless told otherwise.
    auth_mode: Literal["dev", "oidc"] = "oidc"
    dev_signing_key: SecretStr | None = None
    jwt_issuer: str = "itsm-dev"
    jwt_audience: str = "itsm"
    oidc_jwks_url: str | None = None
    oidc_algorithms: list[str] = ["RS256", "ES256"]

    public_base_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = Field(1_048_576, ge=1024)
    log_level: str = "INFO"
    log_json: bool = True

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        platform_env = EnvSettingsSource(settings_cls, env_prefix="ITSM_")
        return init_settings, env_settings, platform_env, dotenv_settings, file_secret_settings
