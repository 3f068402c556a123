"""The MQTT side of the gateway: the link, the uplink drain and the wire contract."""
