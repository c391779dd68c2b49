"""The sla service: lands with its own issue (#4). Until then it has no code."""
