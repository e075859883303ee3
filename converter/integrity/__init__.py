"""Checking stores: the schema (`validate`), `verify` against the source, and `export` /
`self_check`, which rebuild the source files byte for byte."""

from .export import export, self_check
from .schema import validate
from .verify import VerifyReport, verify

__all__ = ["VerifyReport", "export", "self_check", "validate", "verify"]
