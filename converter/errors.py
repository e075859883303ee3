"""The package's exceptions: few, each a subclass of a builtin.

The command line prints their one-line message: `SourceError` and `StoreError` exit 2
(bad input), `StorageError` exits 3 (the storage failed, not the input).
"""

from __future__ import annotations

import errno


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


class StorageError(OSError):
    """The disk or bucket failed: full, read-only, denied, failing or unreachable.

    Not a problem of the input: the message names the place and says whether a rerun helps.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


# Failures a rerun can finish once the cause is gone (space freed, disk back).
RETRYABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})
# Failures a rerun alone does not fix.
DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def storage_error(e: OSError, where: str, doing: str = "writing") -> StorageError | None:
    """`e` as a one-line `StorageError` about ``where``, or None when it is not a storage failure."""
    if e.errno in DENIED_ERRNOS:
        place = e.filename or where
        return StorageError(f"{place}: {e.strerror or e} while {doing}; fix the permissions "
                                     "(or choose another place), then run the same command again to resume", e.errno)
    if e.errno in RETRYABLE_ERRNOS:
        return StorageError(f"{where}: {e.strerror or e} while {doing}; the work done so far is kept, "
                                     "run the same command again to resume", e.errno)
    return None
