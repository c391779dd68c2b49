"""Settings base: one env prefix per service (`ITSM_INCIDENTS_…`), falling back to the
platform-wide `ITSM_…` variable, so common values (broker, database, signing key) are set once.

Every secret setting (each `SecretStr` field, and `mongo_url`, which may carry a password) can
instead be read from a file, as mounted Kubernetes Secrets and Docker secrets are: the variable
with `_FILE` appended names the file (`ITSM_DEV_SIGNING_KEY_FILE=/run/secrets/jwt-key`), whose
content, without its trailing newline, is the value. The variable itself, when also set, wins
over its `_FILE` twin; a `_FILE` naming a missing, unreadable or empty file fails at start-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, IPvAnyNetwork, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

# Secrets that are not SecretStr fields (a MongoDB URL may embed a password).
FILE_READABLE = frozenset({"mongo_url"})


class SettingsFileError(ValueError):
    """A `*_FILE` variable names a file that can't be used (the message names the variable and
    the path, never the content)."""


def secret_fields(settings_cls: type[BaseSettings]) -> list[str]:
    """The fields that may come from a file; a field with its own `<name>_file` setting (the
    Kafka SASL password) reads its file itself."""
    fields = settings_cls.model_fields
    exempt: frozenset[str] = getattr(settings_cls, "secret_files_exempt", frozenset())
    return [
        name
        for name, info in fields.items()
        if (name in FILE_READABLE or "SecretStr" in str(info.annotation))
        and f"{name}_file" not in fields
        and name not in exempt
    ]


class SecretFilesSource(PydanticBaseSettingsSource):
    """`<PREFIX><FIELD>_FILE` variables: the secret is the named file's content."""

    def __init__(self, settings_cls: type[BaseSettings], prefix: str) -> None:
        super().__init__(settings_cls)
        self.prefix = prefix.upper()

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        environ = {key.upper(): value for key, value in os.environ.items()}
        found: dict[str, Any] = {}
        for name in secret_fields(self.settings_cls):
            variable = f"{self.prefix}{name.upper()}"
            path = environ.get(f"{variable}_FILE")
            if not path or environ.get(variable):  # the variable itself wins
                continue
            found[name] = read_secret_file(f"{variable}_FILE", Path(path))
        return found


def read_secret_file(variable: str, path: Path) -> str:
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsFileError(f"{variable}: cannot read {path}: {reason}") from None
    if not value:
        raise SettingsFileError(f"{variable}: {path} is empty")
    return value


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ITSM_", extra="ignore")
    # Secret fields whose `_FILE` variable means something else (see the embedded launcher).
    secret_files_exempt: ClassVar[frozenset[str]] = frozenset()

    service_name: str = "itsm"
    mongo_url: str = "mongodb://127.0.0.1:27017"
    mongo_database: str = "itsm"
    mongo_timeout_ms: int = Field(5_000, ge=100)
    kafka_bootstrap: str = "127.0.0.1:9092"
    # --- Kafka client security (shared/bus/security.py builds every client's settings) -------
    # PLAINTEXT (default, loopback only) | SSL (TLS; mTLS with a client cert and key) |
    # SASL_PLAINTEXT | SASL_SSL (SCRAM over TLS: production). The password comes from
    # KAFKA_SASL_PASSWORD or from the file KAFKA_SASL_PASSWORD_FILE (a mounted Secret).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_cafile: Path | None = None  # the CA that signed the brokers' certs (else system)
    kafka_ssl_certfile: Path | None = None  # mTLS: the client certificate (PEM)...
    kafka_ssl_keyfile: Path | None = None  # ...and its private key (PEM, unencrypted)
    kafka_ssl_check_hostname: bool = True
    # --- end of Kafka client security ----------------------------------------------------------
    # What one consumer holds before processing it (shared/bus/limits.py): records per fetch,
    # bytes per partition and per fetch response in aiokafka's buffer.
    kafka_max_poll_records: int = Field(500, ge=1, le=10_000)
    kafka_max_partition_fetch_bytes: int = Field(1_048_576, ge=65_536, le=67_108_864)
    kafka_fetch_max_bytes: int = Field(16_777_216, ge=65_536, le=268_435_456)
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
    # Rotation: the key being retired still verifies (tokens it signed live out their TTL).
    dev_signing_previous_key: SecretStr | None = None
    jwt_issuer: str = "itsm-dev"
    jwt_audience: str = "itsm"
    oidc_jwks_url: str | None = None
    oidc_algorithms: list[str] = ["RS256", "ES256"]

    public_base_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = Field(1_048_576, ge=1024)
    # Per-client token buckets (per replica), keyed by the token's subject or else the source
    # address; 0 per second turns a limit off. Alert intake has its own, stricter buckets.
    api_rate_per_second: float = Field(50, ge=0)
    api_rate_burst: int = Field(200, ge=1)
    intake_rate_per_second: float = Field(5, ge=0)
    intake_rate_burst: int = Field(20, ge=1)
    intake_paths: list[str] = []  # path prefixes of alert intake (incidents sets its own)
    rate_limit_max_clients: int = Field(10_000, ge=1)
    # Proxies whose X-Forwarded-For is believed (addresses or CIDRs); none by default.
    trusted_proxies: list[IPvAnyNetwork] = []
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
        prefix = str(settings_cls.model_config.get("env_prefix") or "ITSM_")
        # Most specific first: the service's variable or file, then the platform-wide ones.
        return (
            init_settings,
            env_settings,
            SecretFilesSource(settings_cls, prefix),
            platform_env,
            SecretFilesSource(settings_cls, "ITSM_"),
            dotenv_settings,
            file_secret_settings,
        )
