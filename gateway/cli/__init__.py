"""`rentgate`: one module per command group; `main` is the console script's entry point."""

from gateway.cli.main import main

__all__ = ["main"]
