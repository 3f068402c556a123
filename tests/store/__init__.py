"""The SQLite store (gateway.store): keys, migrations, the writer, the outbox, event history."""
