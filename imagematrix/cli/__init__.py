"""The `build.py` command line."""

from imagematrix.cli.app import main

__all__ = ["main"]
