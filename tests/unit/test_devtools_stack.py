"""devtools.stack without servers: what each process is started with, and the mail sink's files.
(The whole stack runs in tests/e2e/, which start it with `python -m devtools.stack up`.)"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from devtools.localstack import LocalstackError
from devtools.stack import service, service_env
from devtools.stack.cli import main
from devtools.stack.mailsink import Sink


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ITSM_STATE_DIR", str(tmp_path))
    for name in ("KAFKA_PORT", "MONGO_PORT", "ITSM_NOTIFY_SMTP_HOST", "ITSM_STACK_NOTIFY_PORT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_each_api_is_uvicorn_on_its_port_and_the_worker_is_faust(
    monkeypatch: pytest.MonkeyPatch, private_state: Path
) -> None:
    monkeypatch.setenv("ITSM_STACK_NOTIFY_PORT", "18004")
    notify = service("notify")
    assert notify.url == "http://127.0.0.1:18004"
    assert notify.command()[:5] == [sys.executable, "-m", "uvicorn", "services.notify.main:create_app", "--factory"]  # fmt: skip
    assert "18004" in notify.command()
    assert service("incidents").port == 8001 and service("sla-api").port == 8003
    worker = service("sla-worker")
    assert worker.port is None and worker.command()[2:4] == ["services.sla.processor.worker", "worker"]  # fmt: skip
    assert notify.pid_file == private_state / "stack" / "notify.pid"
    assert notify.log_path == private_state / "logs" / "notify.log"
    with pytest.raises(LocalstackError, match="unknown process 'billing'"):
        service("billing")


def test_services_talk_to_the_stacks_servers_with_development_defaults(
    monkeypatch: pytest.MonkeyPatch, private_state: Path
) -> None:
    monkeypatch.setenv("KAFKA_PORT", "19092")
    monkeypatch.setenv("MONGO_PORT", "28017")
    caller = {"ITSM_KAFKA_BOOTSTRAP": "elsewhere:9092", "ITSM_SLA_TARGETS": '{"P1": {"first_response": 5}}'}  # fmt: skip
    env = service_env(caller, dev_key="d" * 40, ack_link_key="a" * 40)
    assert env["ITSM_KAFKA_BOOTSTRAP"] == "127.0.0.1:19092"  # the stack's own broker, always
    assert env["ITSM_MONGO_URL"] == "mongodb://127.0.0.1:28017"
    assert env["ITSM_SLA_TARGETS"] == caller["ITSM_SLA_TARGETS"]  # the caller's settings pass
    assert (env["ITSM_AUTH_MODE"], env["ITSM_DEV_SIGNING_KEY"]) == ("dev", "d" * 40)
    assert env["ITSM_NOTIFY_ACK_LINK_KEY"] == "a" * 40
    assert env["ITSM_NOTIFY_PUBLIC_BASE_URL"] == "http://127.0.0.1:8004"  # ack links work
    assert (env["ITSM_NOTIFY_SMTP_HOST"], env["ITSM_NOTIFY_SMTP_PORT"]) == ("127.0.0.1", "1025")
    assert env["ITSM_NOTIFY_SMTP_SECURITY"] == "plain"
    assert env["ITSM_SLA_DATA_DIR"] == str(private_state / "sla-worker-data")


def test_a_relay_of_ones_own_replaces_the_mail_sink_and_given_keys_are_kept() -> None:
    caller = {
        "ITSM_NOTIFY_SMTP_HOST": "smtp.example.com",
        "ITSM_NOTIFY_SMTP_PORT": "587",
        "ITSM_DEV_SIGNING_KEY": "mine" * 10,
    }
    env = service_env(caller, dev_key="d" * 40, ack_link_key=None)
    assert (env["ITSM_NOTIFY_SMTP_HOST"], env["ITSM_NOTIFY_SMTP_PORT"]) == ("smtp.example.com", "587")  # fmt: skip
    assert "ITSM_NOTIFY_SMTP_SECURITY" not in env
    assert env["ITSM_DEV_SIGNING_KEY"] == "mine" * 10


def test_status_of_a_stack_that_does_not_run_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITSM_STACK_NOTIFY_PORT", "1")  # nothing listens on port 1 (no probe hangs)
    assert main(["status", "notify", "sla-worker"]) == 3
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:2]] == [["sla-worker", "stopped"], ["notify", "stopped"]]  # fmt: skip


def test_the_mail_sink_writes_each_message_with_its_envelope(tmp_path: Path) -> None:
    sink = Sink(tmp_path)
    envelope = SimpleNamespace(
        mail_from="itsm@example.com",
        rcpt_tos=["oncall@example.com"],
        original_content=b"Subject: [P1] INC0000001\r\n\r\nAcknowledge: http://x/ack/t\r\n",
        content=None,
    )
    assert asyncio.run(sink.handle_DATA(None, None, envelope)) == "250 2.0.0 accepted"
    [written] = tmp_path.glob("*.eml")
    raw = written.read_bytes()
    assert raw.startswith(b"X-Sink-Mail-From: itsm@example.com\r\nX-Sink-Rcpt-To: oncall@example.com\r\n")  # fmt: skip
    assert b"Subject: [P1] INC0000001" in raw and not list(tmp_path.glob("*.tmp"))
