"""Writing stores: the layout (pure decisions), the plan, chunk writing, the resumable state,
executors, and the drivers `convert` and `convert_all` (imported on first use)."""

from .._lazy import exports

__all__ = ["MouseResult", "Outcome", "convert", "convert_all", "run"]
__getattr__, __dir__ = exports(__name__, {"MouseResult": ".batch:MouseResult", "convert_all": ".batch:convert_all",
                                          "Outcome": ".convert:Outcome", "convert": ".convert:convert", "run": ".convert:run"})
