"""Kafka topic names. Partition counts are settings; names are contract."""

from enum import StrEnum


class Topic(StrEnum):
    INCIDENTS = "itsm.incidents.events.v1"
    CHANGES = "itsm.changes.events.v1"
    SLA = "itsm.sla.events.v1"
    NOTIFY = "itsm.notify.events.v1"
    INGEST = "itsm.ingest.v1"  # external producers: monitoring alerts, CI/CD, any CloudEvent
    DEAD_LETTER = "itsm.deadletter.v1"
