"""The platform's Kafka client security settings (shared/bus/security.py): what each protocol
hands to aiokafka and Faust, the password from a mounted file, and clear refusals when a setting
is missing. The same settings against a real secured broker: tests/integration/test_kafka_security.py."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest

from devtools.localstack.certs import write_authority
from services.sla.processor.app import broker_credentials
from shared.bus.security import KafkaSecurityError, kafka_client_kwargs, kafka_security
from shared.settings import ServiceSettings

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    write_authority(directory, "broker", ["incidents"])
    return directory


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    settings = ServiceSettings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert kafka_client_kwargs(settings) == {}
    assert broker_credentials(kafka_security(settings)) is None


def test_sasl_ssl_gives_scram_over_verified_tls(tls: Path) -> None:
    settings = ServiceSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="incidents",
        kafka_sasl_password=PASSWORD,
        kafka_ssl_cafile=tls / "ca.crt",
    )
    kwargs = kafka_client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("incidents", PASSWORD)
    context = kwargs["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    credentials = broker_credentials(kafka_security(settings))
    assert isinstance(credentials, faust.SASLCredentials)
    assert (
        credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-512"
    )
    assert PASSWORD not in repr(kafka_security(settings)) and PASSWORD not in repr(settings)
    assert PASSWORD not in repr(credentials)


def test_the_password_is_read_from_a_mounted_file(tmp_path: Path, tls: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")  # as `echo` or an editor leaves it
    settings = ServiceSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="incidents",
        kafka_sasl_password_file=secret,
        kafka_ssl_cafile=tls / "ca.crt",
    )
    assert kafka_client_kwargs(settings)["sasl_plain_password"] == PASSWORD


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tls: Path) -> None:
    monkeypatch.setenv("ITSM_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("ITSM_KAFKA_SSL_CAFILE", str(tls / "ca.crt"))
    monkeypatch.setenv("ITSM_KAFKA_SSL_CERTFILE", str(tls / "incidents.crt"))
    monkeypatch.setenv("ITSM_KAFKA_SSL_KEYFILE", str(tls / "incidents.key"))
    monkeypatch.setenv("ITSM_INCIDENTS_KAFKA_SSL_CHECK_HOSTNAME", "false")

    class IncidentsLike(ServiceSettings):
        model_config = {"env_prefix": "ITSM_INCIDENTS_"}

    settings = IncidentsLike()
    kwargs = kafka_client_kwargs(settings)
    assert kwargs["security_protocol"] == "SSL" and "sasl_mechanism" not in kwargs
    assert kwargs["ssl_context"].check_hostname is False  # the service's own setting wins
    assert isinstance(broker_credentials(kafka_security(settings)), faust.SSLCredentials)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "ITSM_KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "x"},
            "ITSM_KAFKA_SASL_PASSWORD or ITSM_KAFKA_SASL_PASSWORD_FILE",
        ),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_username": "x",
                "kafka_sasl_password_file": "/nonexistent/password",
            },
            "cannot read /nonexistent/password",
        ),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.crt"}, "no such"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "x.crt"}, "both"),
    ],
)
def test_incomplete_settings_fail_at_start_up_naming_the_setting(
    changes: dict[str, str], message: str
) -> None:
    with pytest.raises(KafkaSecurityError, match=message):
        kafka_security(ServiceSettings(**changes))


def test_sasl_plaintext_has_no_tls_context() -> None:
    settings = ServiceSettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="incidents",
        kafka_sasl_password=PASSWORD,
    )
    kwargs = kafka_client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT" and "ssl_context" not in kwargs
    credentials = broker_credentials(kafka_security(settings))
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT"


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("\n")
    settings = ServiceSettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="incidents",
        kafka_sasl_password_file=secret,
    )
    with pytest.raises(KafkaSecurityError, match="is empty"):
        kafka_security(settings)


def test_localstack_secure_env_names_files_never_a_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from devtools.localstack import main

    monkeypatch.setenv("ITSM_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("KAFKA_SECURE_PORT", "19994")
    assert main(["secure", "env", "incidents", "--export"]) == 0
    lines = capsys.readouterr().out.splitlines()
    env = dict(line.removeprefix("export ").split("=", 1) for line in lines)
    home = tmp_path / "kafka-secure"
    assert env == {
        "ITSM_KAFKA_SSL_CAFILE": str(home / "tls" / "ca.crt"),
        "ITSM_KAFKA_BOOTSTRAP": "127.0.0.1:19994",
        "ITSM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "ITSM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "ITSM_KAFKA_SASL_USERNAME": "incidents",
        "ITSM_KAFKA_SASL_PASSWORD_FILE": str(home / "users" / "incidents"),
    }
    assert main(["secure", "env", "incidents", "--mtls"]) == 0
    assert "ITSM_KAFKA_SSL_KEYFILE=" in capsys.readouterr().out
    assert main(["secure", "env", "mallory"]) == 1  # not a principal of the access table
    assert main(["secure", "status"]) == 3  # not running
