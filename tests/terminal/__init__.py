"""The handheld's package (terminal/): scanning vouchers, the co-ordinator's checks, sync."""
