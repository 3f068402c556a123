"""The platform's side: the ingest that stores every gateway's stream in PostgreSQL."""
