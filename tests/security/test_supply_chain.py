"""Supply chain: every runtime and test dependency is pinned in constraints.txt at the version
installed here, the setup and the images install with those pins, the audit fails on a fixable
vulnerability and never passes when nothing was audited, and every image runs as non-root."""

from __future__ import annotations

import re
from pathlib import Path

from devtools import supply_chain
from devtools.supply_chain import closure, read_pins, verdict

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(ROOT.glob("services/*/Dockerfile"))


def test_every_dependency_is_pinned_at_the_installed_version() -> None:
    pins = read_pins(ROOT / "constraints.txt")
    installed = closure()
    assert {"fastapi", "aiokafka", "pymongo", "pytest", "pip-audit"} <= set(installed)
    stale = {n: (pins.get(n), v) for n, v in installed.items() if pins.get(n) != v}
    assert not stale, f"constraints.txt is stale (pinned, installed): {stale}; run make constraints"
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+!-]*", v) for v in pins.values())


def test_setup_and_images_install_with_the_pins() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -c constraints.txt -e '.[test]'" in makefile
    assert re.search(r"^test: lint audit$", makefile, re.M)
    assert DOCKERFILES
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        assert "constraints.txt" in text.split("RUN pip install", 1)[0], dockerfile
        assert re.search(r"^RUN pip install .*-c constraints\.txt \.$", text, re.M), dockerfile


def test_images_run_as_a_non_root_user() -> None:
    for dockerfile in DOCKERFILES:
        final = dockerfile.read_text().rsplit("\nFROM ", 1)[1]  # the runtime stage
        users = re.findall(r"^USER\s+(\S+)", final, re.M)
        assert users, f"{dockerfile}: the runtime stage sets no USER (root)"
        user = users[-1].split(":")[0]
        assert user not in {"0", "root"}, f"{dockerfile}: runs as {user}"
        cmd_at = final.index("\nCMD ")
        assert final.rindex("\nUSER ") < cmd_at, f"{dockerfile}: USER after CMD"


def report(*deps: dict[str, object]) -> dict[str, object]:
    return {"dependencies": list(deps), "fixes": []}


def test_audit_verdicts() -> None:
    fixable = {"name": "a", "version": "1.0", "vulns": [{"id": "PYSEC-1", "fix_versions": ["1.1"]}]}
    unfixed = {"name": "b", "version": "2.0", "vulns": [{"id": "GHSA-x", "fix_versions": []}]}
    clean = {"name": "c", "version": "3.0", "vulns": []}
    skipped = {"name": "d", "skip_reason": "Dependency not found on PyPI and could not be audited"}

    v = verdict(report(fixable, unfixed, clean, skipped))
    assert v.reached and v.audited == 3
    assert v.fixable == ["a 1.0: PYSEC-1 (fixed in 1.1)"]
    assert v.unfixed == ["b 2.0: GHSA-x (no fixed version)"]
    assert v.skipped == {"d": skipped["skip_reason"]}
    assert not verdict(report(skipped)).reached  # all skipped: nothing was audited


def test_audit_fails_on_a_fix_and_never_passes_unaudited(monkeypatch, tmp_path, capsys) -> None:
    vulnerable = report(
        {"name": "a", "version": "1.0", "vulns": [{"id": "PYSEC-1", "fix_versions": ["1.1"]}]}
    )
    unfixed = report({"name": "b", "version": "2.0", "vulns": [{"id": "X", "fix_versions": []}]})
    nothing = report({"name": "a", "skip_reason": "Dependency not found on PyPI"})
    answers: dict[str, tuple[dict | None, str]] = {}
    monkeypatch.setattr(supply_chain, "run_pip_audit", lambda service, _: answers[service])

    answers.update(pypi=(vulnerable, ""), osv=(None, "never asked"))
    assert supply_chain.audit(tmp_path / "c.txt") == 1
    assert "VULNERABLE, fix available: a 1.0: PYSEC-1" in capsys.readouterr().out

    answers.update(pypi=(unfixed, ""))
    assert supply_chain.audit(tmp_path / "c.txt") == 0

    answers.update(pypi=(nothing, ""), osv=(None, "ConnectionError: api.osv.dev"))
    assert supply_chain.audit(tmp_path / "c.txt") == 0
    out = capsys.readouterr().out
    assert "vulnerability service unreachable: nothing was audited" in out
    assert "ConnectionError" in out and "all 1 packages skipped" in out
    assert supply_chain.audit(tmp_path / "c.txt", strict=True) == supply_chain.UNREACHABLE

    answers.update(osv=(vulnerable, ""))  # PyPI's JSON API away, OSV reachable: OSV decides
    assert supply_chain.audit(tmp_path / "c.txt") == 1
