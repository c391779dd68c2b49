"""The changes service: lands with its own issue (#6). Until then it has no code."""
