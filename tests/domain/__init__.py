"""Pure rules and values (gateway.domain): ID numbers, credentials, vouchers, residence rules."""
