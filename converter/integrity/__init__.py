"""Checking stores: the schema (`validate`), `verify` against the source, and `export` /
`self_check`, which rebuild the source files byte for byte (imported on first use)."""

from .._lazy import exports

__all__ = ["VerifyReport", "export", "self_check", "validate", "verify"]
__getattr__, __dir__ = exports(__name__, {"export": ".export:export", "self_check": ".export:self_check",
                                          "validate": "..schema:validate", "VerifyReport": ".verify:VerifyReport",
                                          "verify": ".verify:verify"})
