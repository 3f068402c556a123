"""The door path: read -> decide -> act -> record, never waiting on the network or a disk flush."""
