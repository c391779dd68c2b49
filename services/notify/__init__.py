"""The notify service: escalation policies, on-call rotations, subscriptions, and delivery of
notifications by e-mail, signed webhooks, Slack and Teams (see docs/notify.md)."""
