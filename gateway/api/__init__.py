"""The gateway's HTTP API (FastAPI): REST for handheld terminals, later the web UI."""
