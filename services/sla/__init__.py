"""The sla service: live SLA and OLA timers per ticket in business time, driven by ticket events.

`domain/` is the pure engine; `processor/` runs it as a Faust stream processor
(`create_app(settings)`, `python -m services.sla.processor.worker`).
"""
