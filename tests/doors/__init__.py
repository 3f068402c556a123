"""The door path (gateway.doors): access decisions, door supervision, the access index."""
