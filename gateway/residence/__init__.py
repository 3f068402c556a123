"""The residence rules at work: alerts, terminal records, platform commands, runtime settings."""
