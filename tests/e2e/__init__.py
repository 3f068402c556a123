"""Whole gateways end to end (in-process or `rentgate run`): crashes, outages, upgrades, traffic."""
