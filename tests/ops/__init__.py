"""Looking after a running gateway (gateway.ops): structured logs, the data dir's budget."""
