"""Tests of gateway.runtime: building the gateway from its config, running and stopping it."""
