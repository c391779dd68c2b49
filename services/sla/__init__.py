"""The sla service: live SLA and OLA timers per ticket in business time, driven by ticket events."""
