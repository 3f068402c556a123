"""Every SQL statement: schema and migrations, the outbox, field encryption of personal data."""
