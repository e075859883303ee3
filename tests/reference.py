"""An independent oracle: what neuralpredictors 0.3.0 returns, written from its formulas.

``FileTreeDataset(path, *keys)`` loads ``data/<key>/<i>.npy`` per item; ``NeuroNormalizer``
(statistics ``all``) transforms each key; ``AddBehaviorAsChannels`` and
``AddPupilCenterAsChannels`` append constant channels; ``Subsample`` picks neurons;
``ToTensor`` casts to float32.  (neuralpredictors itself does not import on Python >= 3.10.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class FileTreeReference:
    def __init__(self, folder: Path, *keys: str, normalize: bool = True, behavior_channels: bool = False,
                 pupil_channels: bool = False, idx=None, to_float32: bool = True) -> None:
        self.folder, self.keys, self.normalize = Path(folder), keys, normalize
        self.behavior_channels, self.pupil_channels, self.idx, self.to_float32 = behavior_channels, pupil_channels, idx, to_float32

        def stat(key, name):
            return np.load(self.folder / f"meta/statistics/{key}/all/{name}.npy")

        self.inputs_mean = stat("images", "mean")[()]
        self.inputs_std = stat("images", "std")[()]
        s = np.array(stat("responses", "std"))
        threshold = 0.01 * s.mean()
        idx_ = s > threshold
        self.response_precision = np.ones_like(s) / threshold
        self.response_precision[idx_] = 1 / s[idx_]
        self.eye_mean = np.array(stat("pupil_center", "mean"))
        self.eye_std = np.array(stat("pupil_center", "std"))
        self.behavior_precision = 1 / np.array(stat("behavior", "std"))
        self.tiers = np.load(self.folder / "meta/trials/tiers.npy")

    def __len__(self) -> int:
        return len(self.tiers)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        x = {k: np.load(self.folder / f"data/{k}/{i}.npy") for k in self.keys}
        if self.normalize:
            t = {
                "images": lambda v: (v - self.inputs_mean) / self.inputs_std,
                "responses": lambda v: v * self.response_precision,
                "pupil_center": lambda v: (v - self.eye_mean) / self.eye_std,
                "behavior": lambda v: v * self.behavior_precision,
            }
            x = {k: t[k](v) for k, v in x.items()}
        for flag, key in ((self.behavior_channels, "behavior"), (self.pupil_channels, "pupil_center")):
            if flag:
                img = x["images"]
                x["images"] = np.concatenate(
                    (img, np.ones((1, *img.shape[-(len(img.shape) - 1):])) * np.expand_dims(x[key], axis=((len(img.shape) - 2), (len(img.shape) - 1)))),
                    axis=len(img.shape) - 3,
                )
        if self.idx is not None:
            x["responses"] = x["responses"][..., self.idx]
        if self.to_float32:
            x = {k: v.astype(np.float32) for k, v in x.items()}
        return x
