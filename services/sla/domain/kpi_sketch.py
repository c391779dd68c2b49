"""A small mergeable quantile sketch for durations (DDSketch-style log buckets).

A value x > 0 falls in bucket i = ceil(log_gamma(x)) with gamma = (1 + a) / (1 - a); the bucket
answers 2 * gamma**i / (gamma + 1), which is within relative error `a` (1 %) of every value in
it. Merging two sketches adds their bucket counts, so partials from any number of partitions
merge exactly, in any order, and the merged quantiles keep the same 1 % bound. Values below
`MIN_VALUE` (1 ms) count as zero.

`quantile(q)` estimates the lower empirical quantile: the value of rank floor(q * (n - 1)) in
the sorted samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
MIN_VALUE = 1e-3


def bucket_of(value: float) -> int:
    return math.ceil(math.log(value) / _LOG_GAMMA)


def bucket_value(index: int) -> float:
    return 2 * GAMMA**index / (GAMMA + 1)


@dataclass(frozen=True)
class QuantileSketch:
    zeros: int = 0
    bins: tuple[tuple[int, int], ...] = ()  # (bucket index, count), sorted by index

    @classmethod
    def of(cls, values: Iterable[float]) -> QuantileSketch:
        sketch = cls()
        for value in values:
            sketch = sketch.add(value)
        return sketch

    @property
    def count(self) -> int:
        return self.zeros + sum(count for _, count in self.bins)

    def add(self, value: float, count: int = 1) -> QuantileSketch:
        if value < 0 or math.isnan(value):
            raise ValueError(f"durations are never negative, got {value!r}")
        if value < MIN_VALUE:
            return QuantileSketch(self.zeros + count, self.bins)
        return self.merge(QuantileSketch(0, ((bucket_of(value), count),)))

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        if not other.bins and not other.zeros:
            return self
        counts = dict(self.bins)
        for index, count in other.bins:
            counts[index] = counts.get(index, 0) + count
        return QuantileSketch(self.zeros + other.zeros, tuple(sorted(counts.items())))

    def quantile(self, q: float) -> float | None:
        """The estimated value of rank floor(q * (n - 1)); None when empty."""
        if not 0 <= q <= 1:
            raise ValueError(f"a quantile is between 0 and 1, got {q!r}")
        total = self.count
        if total == 0:
            return None
        rank = math.floor(q * (total - 1))
        seen = self.zeros
        if rank < seen:
            return 0.0
        for index, count in self.bins:
            seen += count
            if rank < seen:
                return bucket_value(index)
        raise AssertionError("unreachable: the ranks are within the count")

    def to_document(self) -> dict[str, Any]:
        return {"zeros": self.zeros, "bins": [[index, count] for index, count in self.bins]}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> QuantileSketch:
        bins = tuple(sorted((int(index), int(count)) for index, count in doc["bins"]))
        if any(count <= 0 for _, count in bins) or int(doc["zeros"]) < 0:
            raise ValueError("sketch counts must be positive")
        return cls(int(doc["zeros"]), bins)
