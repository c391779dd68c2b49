"""The platform's services. Each is independent: they meet only through `shared` contracts."""
