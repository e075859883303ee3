"""The root ``zarr.json`` with every node's metadata consolidated into it.

zarr-python writes the same bytes (``zarr.consolidate_metadata``; a test compares them), but warns on
every call that consolidated metadata is not yet part of the Zarr v3 specification.  The store
relies on it knowingly (docs/store.md), and silencing a warning would take a process-wide filter.
"""

from __future__ import annotations

import json

_INLINE = {"kind": "inline", "must_understand": False}


def _first(node: dict, extra: dict) -> dict:
    """``node`` with ``extra`` after its ``attributes`` and ``zarr_format``, as zarr-python orders the keys."""
    out = {k: node[k] for k in ("attributes", "zarr_format") if k in node}
    out.update(extra)
    out.update({k: v for k, v in node.items() if k not in out})
    return out


def consolidate(root: dict, nodes: dict[str, dict]) -> bytes:
    """The root ``zarr.json`` (``root``) holding ``nodes`` (path -> that node's ``zarr.json``)."""
    metadata = {}
    for rel in sorted(nodes, key=lambda r: (r.count("/"), r)):
        node = nodes[rel]
        if node.get("node_type") == "group":  # as zarr-python lists a group: with empty consolidated metadata
            node = _first({k: v for k, v in node.items() if k != "consolidated_metadata"},
                          {"consolidated_metadata": {**_INLINE, "metadata": {}}})
        metadata[rel] = node
    out = _first({k: v for k, v in root.items() if k != "consolidated_metadata"},
                 {"consolidated_metadata": {**_INLINE, "metadata": metadata}})
    return json.dumps(out, indent=2, allow_nan=True).encode()
