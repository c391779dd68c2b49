"""The incidents service: the ITIL incident lifecycle behind an HTTP API, writing through the
single-document outbox to the incident events topic."""
