"""The memory console: server-rendered pages at `/console`, a client of the sidecar's own REST API."""
