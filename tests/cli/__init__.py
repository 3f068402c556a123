"""The `rentgate` commands (gateway.cli) and the config file they load (gateway.config)."""
