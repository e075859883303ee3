"""Reading a source dataset: a folder or the distributed zip, on disk or at a URL.

`open_source` opens it, `scan` lists and checks its files (an `Inventory`), and
`trial_header` checks every trial file's header, `read_array` / `read_trials` decode its ``.npy`` files (`converter.source.npy`, never with
pickling).
"""

from .arrays import TrialBlock, read_array, read_trials, trial_header
from .files import Source, ZipSource, is_own_output, open_source
from .inventory import Inventory, scan

__all__ = ["Inventory", "Source", "TrialBlock", "ZipSource", "is_own_output", "open_source", "read_array", "read_trials", "scan", "trial_header"]
