"""The HTTP edge: the app factory, authentication and limits, request schemas, routes, MCP and metrics.

Routes translate HTTP to typed calls on the services (`sidecar.chat`, `sidecar.engine.adapters`, the memory packages);
`errors` alone turns the services' domain errors into HTTP statuses.
"""
