"""What the benchmarks share: percentiles, CPU and memory of processes, the result table.

Every bench prints a table of figure / value / baseline / ratio / aim, and the cores each process
used (CPU seconds / wall seconds, read from /proc), with `others` = whatever else kept the
machine busy: on a shared machine that row says how fair the run was.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# -- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline and not math.isnan(baseline) else float("nan")


# -- processes ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc (None if it is gone or unreadable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (VmRSS), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def machine_busy_seconds() -> float:
    """CPU seconds spent busy on all cores together (everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def listening_pid(port: int) -> int | None:
    """The process listening on a loopback TCP port (the broker's or the database's), or None
    when it cannot be found (e.g. a server on another machine)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


def port_of(address: str, default: int) -> int:
    """The port of `host:port` (the first of a comma-separated list) or of a mongodb:// URL."""
    first = address.split("//", 1)[-1].split("/", 1)[0].split(",")[0]
    tail = first.rsplit(":", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else default


# -- CPU per phase ------------------------------------------------------------------------------


@dataclass
class CpuMeter:
    """Cores used per named process (CPU seconds / wall seconds) over a phase. Processes can be
    added as they start; `machine` is every process, `others` what the named ones do not
    explain (other users of the machine)."""

    pids: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, pids: Mapping[str, int | None]) -> CpuMeter:
        """A meter of the named processes that were found (a None pid is left out)."""
        return cls({name: pid for name, pid in pids.items() if pid is not None})

    def add(self, name: str, pid: int | None) -> None:
        if pid is not None:
            self.pids[name] = pid

    def snapshot(self) -> dict[str, float]:
        taken = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        sample = {name: value for name, value in taken.items() if value is not None}
        sample["machine"] = machine_busy_seconds()
        sample["wall"] = time.perf_counter()
        return sample

    @staticmethod
    def cores(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        wall = after["wall"] - before["wall"]
        if wall <= 0:
            return {}
        cores = {
            name: (after[name] - before[name]) / wall
            for name in before
            if name != "wall" and name in after
        }
        known = sum(value for name, value in cores.items() if name != "machine")
        cores["others"] = max(0.0, cores["machine"] - known)
        return cores

    @staticmethod
    def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """CPU seconds per process over an interval, plus `other`: the rest of the machine."""
        used = {
            name: after[name] - before[name] for name in before if name != "wall" and name in after
        }
        machine = used.pop("machine")
        used["other"] = max(0.0, machine - sum(used.values()))
        return used


@dataclass
class Phases:
    """Cores per process for each named phase of a run, printed as one table."""

    meter: CpuMeter
    rows: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict)
    _open: dict[str, dict[str, float]] = field(default_factory=dict)

    def start(self, name: str) -> None:
        self._open[name] = self.meter.snapshot()

    def stop(self, name: str) -> dict[str, float]:
        before = self._open.pop(name)
        after = self.meter.snapshot()
        cores = CpuMeter.cores(before, after)
        self.rows[name] = (after["wall"] - before["wall"], cores)
        return cores

    async def idle_probe(self, seconds: float = 2.0) -> dict[str, float]:
        """What keeps the machine busy before the bench does anything."""
        self.start("idle probe")
        await asyncio.sleep(seconds)
        return self.stop("idle probe")

    def table(self) -> str:
        names = [*self.meter.pids, "others", "machine"]
        out = [
            f"cores used per phase (CPU s / wall s, of {os.cpu_count()} cores; machine = every "
            "process, others = processes not named here)",
            f"{'phase':<28}{'wall s':>9}" + "".join(f"{n:>10}" for n in names),
        ]
        for phase, (wall, cores) in self.rows.items():
            cells = "".join(f"{cores[n]:>10.2f}" if n in cores else f"{'-':>10}" for n in names)
            out.append(f"{phase:<28}{wall:>9.1f}{cells}")
        return "\n".join(out)


# -- results ------------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    """A figure with its unit: ms, s, /s, B, KiB, MiB, x (ratio) or a plain count."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "s":
        return f"{value:,.2f} s"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "us":
        return f"{value:,.0f} us"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "MiB":
        return f"{value / 2**20:,.1f} MiB"
    if unit == "x":
        return f"{value:.3g}"
    return f"{value:,.0f}"


def aim_mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


@dataclass
class Results:
    """The figure / value / baseline / ratio / aim table."""

    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    def add(
        self,
        figure: str,
        value: float | None,
        baseline: float | None = None,
        unit: str = "",
        aim: str = "",
        *,
        ratio_value: float | None = None,
    ) -> None:
        if ratio_value is None and value is not None and baseline is not None:
            ratio_value = ratio(value, baseline)
        self.rows.append(
            (figure, fmt(value, unit), fmt(baseline, unit), fmt(ratio_value, "x"), aim)
        )

    def note(self, figure: str, value: str, aim: str = "") -> None:
        self.rows.append((figure, value, "-", "-", aim))

    def table(self) -> str:
        head = ("figure", "value", "baseline", "ratio", "aim")
        widths = [max(len(row[i]) for row in [head, *self.rows]) for i in range(len(head))]

        def line(cells: tuple[str, ...]) -> str:
            return " | ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            )

        return "\n".join([line(head), "-+-".join("-" * w for w in widths), *map(line, self.rows)])


def cancel_on_sigterm() -> None:
    """SIGTERM (e.g. from `timeout`) cancels the running main task, so cleanup runs as on
    Ctrl-C. Call from inside the event loop."""
    task, loop = asyncio.current_task(), asyncio.get_running_loop()

    def cancel_once() -> None:  # a second signal must not cancel the cleanup itself
        loop.remove_signal_handler(signal.SIGTERM)
        if task is not None:
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, cancel_once)
