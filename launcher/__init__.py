"""Process launchers that compose several services (the embedded one-process platform)."""
