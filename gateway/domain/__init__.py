"""Pure rules and values: no I/O, no clocks, no storage."""
