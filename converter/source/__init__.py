"""Reading a source dataset: a folder or the distributed zip, on disk or at a URL.

`open_source` opens it, `scan` lists and checks its files (an `Inventory`), `trial_header`
reads the header every trial file of a folder shares, and `read_array` / `read_trials` decode
its ``.npy`` files, checking each (`converter.source.npy`, never with pickling).
"""

from .arrays import TrialBlock, read_array, read_trials, trial_header
from .files import Source, ZipSource, is_own_output, open_source
from .inventory import Inventory, scan

__all__ = ["Inventory", "Source", "TrialBlock", "ZipSource", "is_own_output", "open_source", "read_array", "read_trials", "scan", "trial_header"]
