"""Rentgate: the edge gateway for rental housing."""

__version__ = "0.1.0"
