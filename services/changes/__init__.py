"""The changes service: change requests with risk, CAB approvals, scheduling checks, PIR,
CI/CD deployments and incident correlation."""
