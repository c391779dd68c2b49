"""The change domain: aggregate, lifecycle table, risk, approval policy, scheduling rules."""
