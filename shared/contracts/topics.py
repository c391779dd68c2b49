"""Kafka topic names. Partition counts are settings; names are contract."""

from enum import StrEnum


class Topic(StrEnum):
    INCIDENTS = "itsm.incidents.events.v1"
    CHANGES = "itsm.changes.events.v1"
    SLA = "itsm.sla.events.v1"
    SLA_POLICIES = "itsm.sla.policies.v1"  # compacted: every policy/calendar version, for ever
    SLA_KPIS = "itsm.sla.kpis.v1"  # compacted: the latest snapshot of every KPI partial
    NOTIFY = "itsm.notify.events.v1"
    INGEST = "itsm.ingest.v1"  # external producers: monitoring alerts, CI/CD, any CloudEvent
    DEAD_LETTER = "itsm.deadletter.v1"
