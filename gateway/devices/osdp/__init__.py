"""OSDP readers: libosdp's control panel on RS-485, the reader's relay and inputs, a simulator."""
