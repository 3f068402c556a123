"""Rentgate's tests: one folder per layer of the `gateway` package (and `terminal/`), plus e2e/.

Shared helpers live in `tests.support`; import them as `tests.support.…` from anywhere.
"""
