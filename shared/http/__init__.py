"""HTTP plumbing shared by every service: RFC 9457 problems, health, metrics, pagination."""
