"""Keeping the gateway alive and looked after: liveness, watchdog, status, housekeeping, logs."""
