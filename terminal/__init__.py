"""Rentgate's handheld capture terminal (scanning, capture, offline queue, sync)."""
