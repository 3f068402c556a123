"""The MQTT side (gateway.sync): link settings, TLS, protocol versions, downlink, consumers."""
