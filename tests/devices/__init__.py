"""Reader drivers (gateway.devices) on real pseudo-terminals and FIFOs, with their simulators."""
