"""SLA policies and business calendars managed through the SLA API: versioned CRUD in MongoDB,
every version published through the outbox on the compacted policies topic, which every SLA
worker reads in full (`services/sla/processor/policies.py`).

`model` and `catalog` are pure; `handlers` are the use cases, `store` the repositories, `api`
the FastAPI `router` and `wiring.build` what a service's app factory calls.
"""
