"""The notify service: lands with its own issue (#5). Until then it has no code."""
