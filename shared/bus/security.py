"""How every Kafka client of the platform authenticates: one place that turns the settings
(`ITSM_KAFKA_SECURITY_PROTOCOL`, `…_SASL_*`, `…_SSL_*`, shared/settings.py) into aiokafka's
connection arguments. The bus (producer, consumers, admin), the SLA worker (Faust) and every
other aiokafka client take their arguments from here, so a secured cluster is one set of
settings for the whole platform.

- `PLAINTEXT`: nothing (the default; loopback development only).
- `SSL`: TLS, verifying the brokers against `kafka_ssl_cafile` (else the system's trust store);
  with `kafka_ssl_certfile` and `kafka_ssl_keyfile` the client also presents a certificate
  (mTLS), whose subject is its principal.
- `SASL_SSL` (production) / `SASL_PLAINTEXT`: SCRAM-SHA-512 (or -256, PLAIN) with
  `kafka_sasl_username` and the password from `kafka_sasl_password` or the file
  `kafka_sasl_password_file` (a mounted Secret, read at connect time), over TLS as above.

Misconfiguration fails at start-up with a message naming the missing setting; the password
never appears in a message or a repr.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.settings import ServiceSettings


class KafkaSecurityError(ValueError):
    """The Kafka security settings are incomplete or inconsistent."""


@dataclass(frozen=True)
class KafkaSecurity:
    """The resolved client security of one service; `kwargs()` for aiokafka's clients."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
        if self.protocol == "PLAINTEXT":
            return {}
        args: dict[str, Any] = {"security_protocol": self.protocol}
        if self.ssl_context is not None:
            args["ssl_context"] = self.ssl_context
        if self.uses_sasl:
            args |= {
                "sasl_mechanism": self.mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        return args


def tls_context(
    cafile: Path | None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    *,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client TLS context (TLS 1.2+, certificate verification always on)."""
    if (certfile is None) != (keyfile is None):
        raise KafkaSecurityError(
            "mTLS needs both ITSM_KAFKA_SSL_CERTFILE and ITSM_KAFKA_SSL_KEYFILE (or neither)"
        )
    for name, path in (("CAFILE", cafile), ("CERTFILE", certfile), ("KEYFILE", keyfile)):
        if path is not None and not Path(path).is_file():
            raise KafkaSecurityError(f"ITSM_KAFKA_SSL_{name}: no such file {path}")
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if certfile is not None and keyfile is not None:
        context.load_cert_chain(str(certfile), str(keyfile))
    return context


def _password(settings: ServiceSettings) -> str:
    if settings.kafka_sasl_password is not None:
        return settings.kafka_sasl_password.get_secret_value()
    path = settings.kafka_sasl_password_file
    if path is None:
        raise KafkaSecurityError(
            f"ITSM_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs "
            "ITSM_KAFKA_SASL_PASSWORD or ITSM_KAFKA_SASL_PASSWORD_FILE"
        )
    try:
        # A mounted Secret file; a trailing newline (echo, an editor) is not part of it.
        password = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise KafkaSecurityError(
            f"ITSM_KAFKA_SASL_PASSWORD_FILE: cannot read {path} ({reason})"
        ) from None
    if not password:
        raise KafkaSecurityError(f"ITSM_KAFKA_SASL_PASSWORD_FILE: {path} is empty")
    return password


def kafka_security(settings: ServiceSettings) -> KafkaSecurity:
    """The client security `settings` ask for; KafkaSecurityError when incomplete."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return KafkaSecurity()
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = tls_context(
            settings.kafka_ssl_cafile,
            settings.kafka_ssl_certfile,
            settings.kafka_ssl_keyfile,
            check_hostname=settings.kafka_ssl_check_hostname,
        )
    if protocol == "SSL":
        return KafkaSecurity(protocol, ssl_context=context)
    if not settings.kafka_sasl_username:
        raise KafkaSecurityError(
            f"ITSM_KAFKA_SECURITY_PROTOCOL={protocol} needs ITSM_KAFKA_SASL_USERNAME"
        )
    return KafkaSecurity(
        protocol,
        mechanism=settings.kafka_sasl_mechanism,
        username=settings.kafka_sasl_username,
        password=_password(settings),
        ssl_context=context,
    )


def kafka_client_kwargs(settings: ServiceSettings) -> dict[str, Any]:
    """aiokafka's security arguments for `settings` (empty for PLAINTEXT)."""
    return kafka_security(settings).kwargs()
