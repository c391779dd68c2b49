"""The SLA stream processor: the pure engine (`services.sla.domain`) run by Faust.

`create_app(settings)` builds the app; `python -m services.sla.processor.worker` runs a worker.
Besides the SLA facts it keeps the streaming KPIs (`kpis.py`) and reads managed policies from
the compacted policies topic (`policies.py`). The read API, which materialises the facts and
KPI snapshots into MongoDB, is a separate process: `services.sla.main`.
"""

from services.sla.processor.app import SlaComponents, create_app
from services.sla.processor.catalog import DEFAULT_TARGETS, default_catalog
from services.sla.processor.settings import SlaSettings, TargetOverride
from services.sla.processor.topics import due_topic_name

__all__ = [
    "DEFAULT_TARGETS",
    "SlaComponents",
    "SlaSettings",
    "TargetOverride",
    "create_app",
    "default_catalog",
    "due_topic_name",
]
