"""The package's exceptions: few, each a subclass of a builtin.

The command line maps both to exit code 2 and prints their one-line message.
"""

from __future__ import annotations


class SourceError(ValueError):
    """The source dataset (folder or zip) is malformed; the message names the file."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # raised on a dask worker, re-raised on the client
        return (SourceError, (self.path, self.problem))


class StoreError(ValueError):
    """A store is missing, incomplete, in the way, or does not match the schema."""
