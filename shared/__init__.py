"""The platform's shared library: event contracts, bus and store adapters, auth, HTTP and
observability plumbing. It never imports a service; services meet only through it."""
