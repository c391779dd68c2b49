"""KPI partials and their summary: what the processor stores, publishes and the read API merges.

A `KpiPartial` is the figures of one bucket -- (granularity, window, team, priority, service) --
counted from ONE source partition (topic, partition). Records of a source partition are applied
in offset order by one agent, so a partial carries `watermark`, the highest source offset it has
applied, and a redelivered record (offset <= watermark) changes nothing: no per-ticket dedupe.

Everything but `backlog` is a count or a sum (and a mergeable sketch), so partials of any
partitions and dims add up. `backlog` is a gauge: the open tickets of those dims in that source
partition after the last event applied while the source's event time was in that window.
`summarize` therefore takes, per (source, dims), the latest window's backlog, and sums those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, get_args
from urllib.parse import quote, unquote

from services.sla.domain.kpi_sketch import QuantileSketch

Granularity = Literal["hour", "day"]
GRANULARITIES: tuple[Granularity, ...] = get_args(Granularity)
WINDOW: Mapping[Granularity, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
NONE = "-"  # the dim value of "not set": no group yet, a change's priority, no service
KEY_PREFIX = "kpi"


def window_start(granularity: Granularity, at: datetime) -> datetime:
    """The UTC window of `granularity` that contains `at`."""
    at = at.astimezone(UTC)
    if granularity == "hour":
        return at.replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Dims:
    team: str = NONE
    priority: str = NONE
    service: str = NONE


@dataclass(frozen=True)
class DurationStat:
    """Durations in seconds: count and sum for the mean, a sketch for p50/p90."""

    total: float = 0.0
    sketch: QuantileSketch = field(default_factory=QuantileSketch)

    @classmethod
    def of(cls, seconds: float) -> DurationStat:
        return cls(seconds, QuantileSketch().add(seconds))

    @property
    def count(self) -> int:
        return self.sketch.count

    def __add__(self, other: DurationStat) -> DurationStat:
        return DurationStat(self.total + other.total, self.sketch.merge(other.sketch))

    def to_document(self) -> dict[str, Any]:
        return {"total": self.total, "sketch": self.sketch.to_document()}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> DurationStat:
        return cls(float(doc["total"]), QuantileSketch.from_document(doc["sketch"]))


_STATS = ("first_response", "resolution")


@dataclass(frozen=True)
class KpiFigures:
    """The additive figures of a bucket. `resolution` samples are times to resolve (MTTR)."""

    opened: int = 0
    resolved: int = 0
    reopened: int = 0
    first_response: DurationStat = DurationStat()
    resolution: DurationStat = DurationStat()
    csat_count: int = 0
    csat_sum: int = 0
    fcr_eligible: int = 0  # first resolutions
    fcr_count: int = 0  # ... of them resolved at first contact
    sla_met: int = 0
    sla_missed: int = 0
    breaches: int = 0
    changes_completed: int = 0
    changes_successful: int = 0
    late_events: int = 0  # contributions that arrived after their window was final

    def __add__(self, other: KpiFigures) -> KpiFigures:
        # Most sums in a plan start from nothing: building a frozen 15-field figure costs more
        # than the rest of the addition.
        if self is NO_FIGURES:
            return other
        if other is NO_FIGURES:
            return self
        return KpiFigures(**{name: getattr(self, name) + getattr(other, name) for name in _FIGURES})

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {name: getattr(self, name) for name in _COUNTS}
        for name in _STATS:
            doc[name] = getattr(self, name).to_document()
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> KpiFigures:
        counts: dict[str, Any] = {name: int(doc.get(name, 0)) for name in _COUNTS}
        stats: dict[str, Any] = {
            name: DurationStat.from_document(doc[name]) if name in doc else DurationStat()
            for name in _STATS
        }
        return cls(**counts, **stats)


# The field names, once: `dataclasses.fields` on every addition showed in the due path's profile.
_FIGURES = tuple(f.name for f in fields(KpiFigures))
NO_FIGURES = KpiFigures()  # shared: frozen, and the default of every bucket and contribution
_COUNTS = tuple(name for name in _FIGURES if name not in _STATS)


@dataclass(frozen=True)
class KpiPartial:
    """One bucket's figures from one source partition, with the source offset applied last."""

    source_topic: str
    source_partition: int
    granularity: Granularity
    window_start: datetime
    dims: Dims
    figures: KpiFigures = NO_FIGURES
    backlog: int | None = None  # None: no ticket of these dims opened or closed (changes only)
    watermark: int = -1
    final: bool = False  # set on the published snapshot once the window can change no more

    @property
    def window_end(self) -> datetime:
        return self.window_start + WINDOW[self.granularity]

    @property
    def key(self) -> str:
        return partial_key(
            self.source_topic, self.source_partition, self.granularity, self.window_start, self.dims
        )

    @property
    def sequence(self) -> int:
        """Monotonic per partial, for consumers' version guards: a final snapshot outranks the
        open one with the same watermark."""
        return 2 * (self.watermark + 1) + int(self.final)

    def to_document(self) -> dict[str, Any]:
        return {
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "granularity": self.granularity,
            "window_start": _instant(self.window_start),
            "window_end": _instant(self.window_end),
            **asdict(self.dims),
            "figures": self.figures.to_document(),
            "backlog": self.backlog,
            "watermark": self.watermark,
            "final": self.final,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> KpiPartial:
        granularity = doc["granularity"]
        if granularity not in GRANULARITIES:
            raise ValueError(f"unknown KPI granularity {granularity!r}")
        start = datetime.fromisoformat(doc["window_start"])
        if start.tzinfo is None:
            raise ValueError("window_start must carry a time zone")
        backlog = doc.get("backlog")
        return cls(
            source_topic=str(doc["source_topic"]),
            source_partition=int(doc["source_partition"]),
            granularity=granularity,
            window_start=start.astimezone(UTC),
            dims=Dims(str(doc["team"]), str(doc["priority"]), str(doc["service"])),
            figures=KpiFigures.from_document(doc["figures"]),
            backlog=None if backlog is None else int(backlog),
            watermark=int(doc["watermark"]),
            final=bool(doc.get("final", False)),
        )


@lru_cache(maxsize=4096)  # built for every plan item, from a handful of distinct arguments
def partial_key(
    topic: str, partition: int, granularity: Granularity, start: datetime, dims: Dims
) -> str:
    """`kpi|<topic>|<partition>|<granularity>|<window start>|<team>|<priority>|<service>`, each
    free-text part percent-encoded so a `|` in a group name cannot shift the fields."""
    parts = [topic, str(partition), granularity, _instant(start), *asdict(dims).values()]
    return "|".join([KEY_PREFIX, *(quote(part, safe="") for part in parts)])


def parse_partial_key(key: str) -> tuple[str, int, Granularity, datetime, Dims]:
    prefix, topic, partition, granularity, start, team, priority, service = [
        unquote(part) for part in key.split("|")
    ]
    if prefix != KEY_PREFIX or granularity not in GRANULARITIES:
        raise ValueError(f"not a KPI partial key: {key!r}")
    dims = Dims(team, priority, service)
    return topic, int(partition), granularity, datetime.fromisoformat(start), dims  # type: ignore[return-value]


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


# -- summary ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KpiSummary:
    """The figures of any set of partials of one granularity. Durations in seconds; a figure
    with nothing to measure is None (no resolutions: no MTTR, not 0)."""

    partials: int = 0
    opened: int = 0
    resolved: int = 0
    reopened: int = 0
    backlog: int = 0
    first_responses: int = 0
    first_response_mean: float | None = None
    first_response_p50: float | None = None
    first_response_p90: float | None = None
    resolutions: int = 0
    mttr_mean: float | None = None
    mttr_p50: float | None = None
    mttr_p90: float | None = None
    csat_count: int = 0
    csat_average: float | None = None
    fcr_percent: float | None = None
    sla_met: int = 0
    sla_missed: int = 0
    sla_compliance_percent: float | None = None
    breaches: int = 0
    changes_completed: int = 0
    changes_successful: int = 0
    change_success_percent: float | None = None
    late_events: int = 0
    windows: tuple[str, ...] = field(default=())  # the window starts covered, ISO-8601

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "windows": list(self.windows)}


def merge(partials: Iterable[KpiPartial]) -> KpiFigures:
    total = KpiFigures()
    for partial in partials:
        total = total + partial.figures
    return total


def summarize(partials: Iterable[KpiPartial]) -> KpiSummary:
    """Merge partials of any partitions, dims and windows of ONE granularity into the figures.
    Backlog: per (source, dims) the latest window's gauge, summed."""
    items = list(partials)
    granularities = {p.granularity for p in items}
    if len(granularities) > 1:
        raise ValueError("hour and day partials count the same events: summarize one of them")
    figures = merge(items)
    latest: dict[tuple[str, int, Dims], KpiPartial] = {}
    for partial in items:
        if partial.backlog is None:
            continue
        key = (partial.source_topic, partial.source_partition, partial.dims)
        if key not in latest or latest[key].window_start < partial.window_start:
            latest[key] = partial
    first, resolution = figures.first_response, figures.resolution
    return KpiSummary(
        partials=len(items),
        opened=figures.opened,
        resolved=figures.resolved,
        reopened=figures.reopened,
        backlog=sum(p.backlog or 0 for p in latest.values()),
        first_responses=first.count,
        first_response_mean=_ratio(first.total, first.count),
        first_response_p50=_rounded(first.sketch.quantile(0.5)),
        first_response_p90=_rounded(first.sketch.quantile(0.9)),
        resolutions=resolution.count,
        mttr_mean=_ratio(resolution.total, resolution.count),
        mttr_p50=_rounded(resolution.sketch.quantile(0.5)),
        mttr_p90=_rounded(resolution.sketch.quantile(0.9)),
        csat_count=figures.csat_count,
        csat_average=_ratio(figures.csat_sum, figures.csat_count),
        fcr_percent=_percent(figures.fcr_count, figures.fcr_eligible),
        sla_met=figures.sla_met,
        sla_missed=figures.sla_missed,
        sla_compliance_percent=_percent(figures.sla_met, figures.sla_met + figures.sla_missed),
        breaches=figures.breaches,
        changes_completed=figures.changes_completed,
        changes_successful=figures.changes_successful,
        change_success_percent=_percent(figures.changes_successful, figures.changes_completed),
        late_events=figures.late_events,
        windows=tuple(sorted({_instant(p.window_start) for p in items})),
    )


def _ratio(total: float, count: int) -> float | None:
    return round(total / count, 3) if count else None


def _percent(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 2) if whole else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def with_figures(partial: KpiPartial, delta: KpiFigures, offset: int) -> KpiPartial:
    return replace(partial, figures=partial.figures + delta, watermark=offset)
