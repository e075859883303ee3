"""The kinds of scan a store can hold, each decided once and asked rather than branched on.

A `ScanKind` knows its data folders and their dimension names, its tiers, its schema, which
of its meta files are required, its citation, and, by name, the parts of the package that
serve it: the sample writer, the PyTorch dataset, loaders and device batches, the scorer and oracle, the
overview page.  Those parts live in higher layers, so they are named here (``"module:attr"``)
and imported on first use: this module imports nothing of the package but `contract`.

Adding a kind of scan means one more `ScanKind` below, in `KINDS`, and the modules it names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from .contract import (DATA_KEYS, FRAME, NEURON, READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION, TIERS, VIDEO_DATA_KEYS,
                       VIDEO_SCHEMA_VERSION, VIDEO_SCHEMA_VERSIONS, VIDEO_TIERS, VIDEOS)


@dataclass(frozen=True)
class ScanKind:
    """One kind of scan: the Sensorium 2022 image scans, or the Sensorium 2023 video scans."""

    name: str  # "image" or "video": in messages, ``info`` and ``ds.sensorium.kind.name``
    title: str
    stimulus: str  # the data folder of the stimulus; its presence in a source decides the kind
    data_keys: tuple[str, ...]  # the data folders the data description names, in the store's order
    tiers: tuple[str, ...]  # the tiers the data description names, in the store's order
    repeated_tiers: tuple[str, ...]  # tiers whose stimuli repeat: what `oracle` and `score` use
    default_tier: str  # scored when no tier is given
    schema_version: str  # written
    schema_versions: tuple[str, ...]  # read
    frames: bool  # every per-trial file ends in a frame axis (clips)
    shared_stimulus_id: bool  # meta/trials/frame_image_id.npy names the stimulus shared by repeats
    dims: dict[tuple[str, int], tuple[str, ...]]  # (data folder, rank) -> per-trial dims
    citation: str
    parts: dict[str, str] = field(default_factory=dict)  # role -> "module:attr", imported on first use

    def part(self, role: str):
        """The function or class that serves ``role`` for this kind (``"dataset"``, ``"score"``, ...)."""
        module, _, attr = self.parts[role].partition(":")
        return getattr(importlib.import_module(module), attr)


CITATION_2022 = (
    "Willeke, K. F., Fahey, P. G., Bashiri, M., Pede, L., Burg, M. F., Blessing, C., Cadena, S. A., "
    "Ding, Z., Lurz, K.-K., Ponder, K., Muhammad, T., Patel, S. S., Ecker, A. S., Tolias, A. S., "
    "Sinz, F. H. (2022). The Sensorium competition on predicting large-scale mouse primary visual "
    "cortex activity. arXiv:2206.08666."
)
CITATION_2023 = (
    "Turishcheva, P., Fahey, P. G., Hansel, L., Froebe, R., Ponder, K., Vystrčilová, M., Willeke, K. F., "
    "Bashiri, M., Wang, E., Ding, Z., Tolias, A. S., Sinz, F. H., Ecker, A. S. (2023). The Dynamic Sensorium "
    "competition for predicting large-scale mouse visual cortex activity from videos. arXiv:2305.19654."
)

IMAGE = ScanKind(
    name="image",
    title="Sensorium 2022 mouse visual cortex data: one scan",
    stimulus="images",
    data_keys=DATA_KEYS,
    tiers=TIERS,
    repeated_tiers=("test", "final_test"),
    default_tier="test",
    schema_version=SCHEMA_VERSION,
    schema_versions=tuple(v for v in READABLE_SCHEMA_VERSIONS if v not in VIDEO_SCHEMA_VERSIONS),
    frames=False,
    shared_stimulus_id=True,
    dims={
        ("images", 3): ("channel", "height", "width"),
        ("images", 2): ("height", "width"),
        ("responses", 1): (NEURON,),
        ("behavior", 1): ("behavior_variable",),
        ("pupil_center", 1): ("pupil_axis",),
    },
    citation=CITATION_2022,
    parts={
        "dataset": "converter.read.torch:MouseDataset",
        "device": "converter.read.device_items:Rows",
        "loaders": "converter.read.torch:loaders",
        "score": "converter.read.score:score_images",
        "oracle": "converter.read.score:oracle_images",
        "overview": "converter.read.plot:image_overview",
    },
)

VIDEO = ScanKind(
    name="video",
    title="Sensorium 2023 mouse visual cortex data: one scan",
    stimulus=VIDEOS,
    data_keys=VIDEO_DATA_KEYS,
    tiers=VIDEO_TIERS,
    repeated_tiers=("oracle",),
    default_tier="oracle",
    schema_version=VIDEO_SCHEMA_VERSION,
    schema_versions=VIDEO_SCHEMA_VERSIONS,
    frames=True,
    shared_stimulus_id=False,
    dims={
        (VIDEOS, 3): ("height", "width", FRAME),
        ("responses", 2): (NEURON, FRAME),
        ("behavior", 2): ("behavior_variable", FRAME),
        ("pupil_center", 2): ("pupil_axis", FRAME),
    },
    citation=CITATION_2023,
    parts={
        "dataset": "converter.read.video:VideoDataset",
        "device": "converter.read.device_items:Windows",
        "loaders": "converter.read.video:video_loaders",
        "score": "converter.read.score_video:score_video",
        "oracle": "converter.read.score_video:oracle_video",
        "overview": "converter.read.plot_video:video_overview",
    },
)

KINDS = (IMAGE, VIDEO)


def kind_of_source(data_keys) -> ScanKind:
    """The kind of a source, from its data folders: a kind's stimulus folder decides it."""
    return next((k for k in KINDS[1:] if k.stimulus in data_keys), KINDS[0])


def kind_of(attrs: dict) -> ScanKind:
    """The kind of a store, from its root attributes (its schema version)."""
    version = attrs.get("schema_version")
    return next((k for k in KINDS if version in k.schema_versions), KINDS[0])


def all_tiers() -> tuple[str, ...]:
    """Every tier any kind names, in the order stores keep them."""
    return tuple(dict.fromkeys(t for k in KINDS for t in k.tiers))


def tier_order(name: str) -> tuple[int, str]:
    """Sort key of a tier: the tiers of `all_tiers` in their order, then any other, alphabetically."""
    known = all_tiers()
    return (known.index(name) if name in known else len(known), name)
