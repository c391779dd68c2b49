"""Supply chain: the pinned dependency set (constraints.txt) and its vulnerability audit.

    python -m devtools.supply_chain constraints   # write constraints.txt from this venv
    python -m devtools.supply_chain audit         # pip-audit constraints.txt

`constraints` pins the closure of `itsm-platform[test]` as installed in the running venv (the
runtime and test dependencies, nothing else the venv may hold). `audit` runs pip-audit on those
pins (no resolution, no install) and fails on a known vulnerability that has a fixed version.
pip-audit's PyPI service reports a package it cannot look up as "skipped" and exits 0: when every
package is skipped, nothing was audited, and this says so ("vulnerability service unreachable")
instead of passing; it then tries the OSV service. `--strict` (or ITSM_AUDIT_STRICT=1) makes an
unreachable service an error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
PROJECT = "itsm-platform"
EXTRAS = ("test",)
HEADER = """\
# Pinned runtime and test dependencies: the closure of itsm-platform[test] as installed in the
# venv that passed `make test`. `make setup` installs with `-c constraints.txt`; the images too.
# Refresh (docs/security.md, "Supply chain"): make constraints
"""
UNREACHABLE = 3


def closure(project: str = PROJECT, extras: tuple[str, ...] = EXTRAS) -> dict[str, str]:
    """Canonical name -> installed version of every distribution `project[extras]` needs,
    following each requirement's extras and markers through the installed metadata."""
    pinned: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(project, frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        dist = metadata.distribution(name)
        for line in dist.requires or ():
            req = Requirement(line)
            markers = [{"extra": extra} for extra in ("", *sorted(wanted))]
            if req.marker is not None and not any(req.marker.evaluate(m) for m in markers):
                continue
            child = canonicalize_name(req.name)
            pinned[child] = metadata.version(child)
            todo.append((child, frozenset(req.extras)))
    pinned.pop(canonicalize_name(project), None)
    return dict(sorted(pinned.items()))


def render(pins: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in pins.items())


def read_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


@dataclass
class Verdict:
    """What one pip-audit report says."""

    audited: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # package -> pip-audit's reason
    fixable: list[str] = field(default_factory=list)  # "pkg 1.0: ID (fixed in 1.1)"
    unfixed: list[str] = field(default_factory=list)  # known, no fixed version yet

    @property
    def reached(self) -> bool:
        return self.audited > 0


def verdict(report: dict[str, Any]) -> Verdict:
    result = Verdict()
    for dep in report.get("dependencies", []):
        if "skip_reason" in dep:
            result.skipped[dep["name"]] = dep["skip_reason"]
            continue
        result.audited += 1
        for vuln in dep.get("vulns", []):
            line = f"{dep['name']} {dep['version']}: {vuln['id']}"
            if vuln.get("fix_versions"):
                result.fixable.append(f"{line} (fixed in {', '.join(vuln['fix_versions'])})")
            else:
                result.unfixed.append(f"{line} (no fixed version)")
    return result


def run_pip_audit(service: str, constraints: Path) -> tuple[dict[str, Any] | None, str]:
    """pip-audit's JSON report, or None and the reason it gave none."""
    argv = [sys.executable, "-m", "pip_audit", "--requirement", str(constraints), "--no-deps",
            "--disable-pip", "--format", "json", "--progress-spinner", "off",
            "--vulnerability-service", service]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return None, lines[-1] if lines else f"pip-audit exited {done.returncode}"
    return report, ""


def audit(constraints: Path = CONSTRAINTS, *, strict: bool = False) -> int:
    failures: list[str] = []
    for service in ("pypi", "osv"):
        report, error = run_pip_audit(service, constraints)
        if report is None:
            failures.append(f"{service}: {error}")
            continue
        result = verdict(report)
        if not result.reached:
            reasons = sorted(set(result.skipped.values()))
            failures.append(
                f"{service}: all {len(result.skipped)} packages skipped, e.g. {reasons[:1]}"
            )
            continue
        print(f"pip-audit ({service}): {result.audited} packages audited")
        for name, reason in result.skipped.items():
            print(f"  not audited: {name}: {reason}")
        for line in result.unfixed:
            print(f"  known vulnerability without a fix (not failing): {line}")
        for line in result.fixable:
            print(f"  VULNERABLE, fix available: {line}")
        return 1 if result.fixable else 0
    print("vulnerability service unreachable: nothing was audited")
    for line in failures:
        print(f"  {line}")
    return UNREACHABLE if strict else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.supply_chain")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("constraints", help="write constraints.txt from this venv")
    check = sub.add_parser("audit", help="pip-audit constraints.txt")
    check.add_argument("--strict", action="store_true", help="an unreachable service fails")
    args = parser.parse_args(argv)
    if args.command == "constraints":
        CONSTRAINTS.write_text(render(closure()))
        print(f"wrote {CONSTRAINTS.relative_to(ROOT)} ({len(closure())} pins)")
        return 0
    strict = args.strict or os.environ.get("ITSM_AUDIT_STRICT") == "1"
    return audit(strict=strict)


if __name__ == "__main__":
    sys.exit(main())
