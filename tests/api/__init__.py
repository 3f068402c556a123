"""The HTTP API and web UI (gateway.api): auth, REST, terminal API, metrics, schema, browser."""
