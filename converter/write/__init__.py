"""Writing stores: the layout (pure decisions), the plan, chunk writing, the resumable state,
executors, and the drivers `convert` and `convert_all`."""

from .batch import MouseResult, convert_all
from .convert import Outcome, convert, run

__all__ = ["MouseResult", "Outcome", "convert", "convert_all", "run"]
