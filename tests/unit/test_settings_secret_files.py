"""Secrets from the environment or from mounted files (`<VARIABLE>_FILE`), for every secret
setting of every service's settings class."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from launcher.embedded import EmbeddedSettings
from services.changes.main import ChangesSettings
from services.incidents.main import IncidentsSettings
from services.notify.main import NotifySettings
from services.sla.main import SlaApiSettings
from shared.settings import ServiceSettings, SettingsFileError, secret_fields

KEY = "k" * 40


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ITSM_DEV_SIGNING_KEY", "ITSM_NOTIFY_ACK_LINK_KEY", "ITSM_MONGO_URL"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)


def secret_file(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


def test_every_secret_setting_may_come_from_a_file() -> None:
    """The list is derived from the field types: a new SecretStr setting is covered at once."""
    assert set(secret_fields(ServiceSettings)) >= {
        "dev_signing_key", "dev_signing_previous_key", "mongo_url",
    }  # fmt: skip
    assert set(secret_fields(NotifySettings)) >= {
        "ack_link_key", "ack_link_previous_key", "smtp_password",
    }  # fmt: skip
    # The Kafka SASL password has its own `kafka_sasl_password_file` setting.
    assert "kafka_sasl_password" not in secret_fields(ServiceSettings)


@pytest.mark.parametrize(
    "settings_cls", [ServiceSettings, IncidentsSettings, ChangesSettings, SlaApiSettings]
)
def test_the_signing_key_is_read_from_a_mounted_file(
    settings_cls: type[ServiceSettings], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = secret_file(tmp_path, "jwt-key", KEY + "\n")  # as `echo` or kubectl write it
    monkeypatch.setenv("ITSM_DEV_SIGNING_KEY_FILE", str(path))
    settings = settings_cls()
    assert settings.dev_signing_key == SecretStr(KEY)
    assert KEY not in repr(settings)


def test_a_service_file_beats_the_platform_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ITSM_ACK_LINK_KEY", "p" * 40)
    monkeypatch.setenv("ITSM_NOTIFY_ACK_LINK_KEY_FILE", str(secret_file(tmp_path, "ack", KEY)))
    monkeypatch.setenv("ITSM_NOTIFY_SMTP_PASSWORD_FILE", str(secret_file(tmp_path, "smtp", "pw")))
    settings = NotifySettings()
    assert settings.ack_link_key == SecretStr(KEY)
    assert settings.smtp_password == SecretStr("pw")


def test_the_variable_itself_wins_over_its_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ITSM_MONGO_URL", "mongodb://from-env:27017")
    monkeypatch.setenv("ITSM_MONGO_URL_FILE", str(secret_file(tmp_path, "url", "mongodb://f")))
    assert ServiceSettings().mongo_url == "mongodb://from-env:27017"
    monkeypatch.delenv("ITSM_MONGO_URL")
    assert ServiceSettings().mongo_url == "mongodb://f"


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("", "is empty"), ("\n", "is empty"), (b"\xff\xfe", "not UTF-8")],
)
def test_an_unusable_file_fails_at_start_up_naming_the_variable_not_the_content(
    content: str | bytes | None, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "key"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    monkeypatch.setenv("ITSM_DEV_SIGNING_KEY_FILE", str(path))
    with pytest.raises(SettingsFileError, match=message) as refused:
        ServiceSettings()
    assert "ITSM_DEV_SIGNING_KEY_FILE" in str(refused.value) and str(path) in str(refused.value)


def test_the_embedded_launcher_keeps_its_own_key_file_meaning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ITSM_DEV_SIGNING_KEY_FILE names the file the launcher creates on first run: a missing
    file is not an error there."""
    monkeypatch.setenv("ITSM_DEV_SIGNING_KEY_FILE", str(tmp_path / "not-yet"))
    assert EmbeddedSettings().dev_signing_key is None
