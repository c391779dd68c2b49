"""Benchmarks against the local stack (`python -m devtools.localstack`)."""
