"""The only code that builds the gateway from its Config and names concrete drivers."""
