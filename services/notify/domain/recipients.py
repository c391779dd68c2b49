"""Who a level's targets are at the moment it fires, and each person's quiet hours: the
directory the service assembles from its stored groups, rotations and user preferences."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from services.notify.domain.model import Target
from services.notify.domain.quiet_hours import QuietHours
from services.notify.domain.rotations import Rotation, who


@dataclass(frozen=True)
class Directory:
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # group -> members
    rotations: Mapping[str, Rotation] = field(default_factory=dict)  # rotation id -> rotation
    quiet_hours: Mapping[str, QuietHours] = field(default_factory=dict)  # user -> their window


@dataclass(frozen=True)
class Resolved:
    recipients: tuple[str, ...]  # in target order, each once
    unresolved: tuple[Target, ...]  # unknown groups and rotations, and empty groups


def resolve(targets: Iterable[Target], directory: Directory, at: datetime) -> Resolved:
    """The people `targets` name at `at`: a rotation is whoever is on call then (overrides
    included), a group its members."""
    recipients: dict[str, None] = {}  # ordered set
    unresolved: list[Target] = []
    for target in targets:
        people: tuple[str, ...] = ()
        if target.kind == "user":
            people = (target.name,)
        elif target.kind == "group":
            people = tuple(directory.groups.get(target.name, ()))
        elif target.name in directory.rotations:
            people = (who(directory.rotations[target.name], at)[0],)
        if not people:
            unresolved.append(target)
        recipients.update(dict.fromkeys(people))
    return Resolved(tuple(recipients), tuple(unresolved))
