"""Normalisation identical to ``NeuroNormalizer`` of neuralpredictors 0.3.0, and its inverse.

The operations, their order and their dtypes follow the published code exactly, so the
results match bit for bit (elementwise float operations round the same way per element,
batched or not):

- images (and the videos of a 2023 scan): ``(x - mean) / std``
- responses: ``x * precision``, ``precision = 1 / std`` where ``std > 0.01 * std.mean()``,
  else ``1 / (0.01 * std.mean())``
- behavior: ``x * (1 / std)`` (no mean subtracted)
- pupil_center: ``(x - mean) / std``

and the official ``ToTensor`` then casts every output to float32.  The competition scores
responses standardised as ``r / std`` (`standardize`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# The statistics `Normalizer` needs of each key, as ``NeuroNormalizer`` reads them.
NEEDED = {"images": ("mean", "std"), "videos": ("mean", "std"), "responses": ("std",), "behavior": ("std",),
          "pupil_center": ("mean", "std")}


def align(values: np.ndarray, dims: tuple[str, ...], key: str, trial_dims: tuple[str, ...],
          trial_shape: tuple[int, ...], name: str) -> np.ndarray:
    """A statistic reshaped to broadcast against one trial of ``key`` (and a batch of trials).

    ``dims`` place its axes on the trial's (``converter.write.layout.stat_dims``): a dim the
    trial has keeps its length, ``<key>_<dim>_reduced`` and a missing dim become length 1.
    A statistic whose dims say nothing (older stores) broadcasts as numpy aligns it, from the
    last axis.  Anything else is a `ValueError` naming the statistic.
    """
    values = np.asarray(values)
    place = {d: k for k, d in enumerate(trial_dims)}
    place.update({f"{key}_{d}_reduced": k for k, d in enumerate(trial_dims)})
    at = [place.get(d) for d in dims]
    if len(dims) == values.ndim and None not in at and at == sorted(set(at)):
        shape = [1] * len(trial_dims)
        for k, n in zip(at, values.shape):
            shape[k] = n
        if all(n in (m, 1) for n, m in zip(shape, trial_shape)):
            return values.reshape(shape)
    try:
        if np.broadcast_shapes(values.shape, tuple(trial_shape)) == tuple(trial_shape):
            return values
    except ValueError:
        pass
    raise ValueError(f"{name}: shape {values.shape} does not broadcast against one trial of {key} {tuple(trial_shape)}")


@dataclass(frozen=True)
class Normalizer:
    """The per-key constants of ``NeuroNormalizer``, from one statistics source."""

    images_mean: np.ndarray | None = None
    images_std: np.ndarray | None = None
    response_precision: np.ndarray | None = None
    behavior_precision: np.ndarray | None = None
    pupil_mean: np.ndarray | None = None
    pupil_std: np.ndarray | None = None

    @classmethod
    def from_statistics(cls, stats: Mapping[str, Mapping[str, np.ndarray]], source: str = "all") -> Normalizer:
        """Build from ``{key: {"mean": ..., "std": ...}}``, each broadcastable against one trial.

        A key with statistics but without one that ``NeuroNormalizer`` needs is a `ValueError`
        naming it (``statistics/<key>/<source>/<stat>``).
        """
        for key, have in stats.items():
            missing = [s for s in NEEDED.get(key, ()) if s not in have]
            if missing:
                raise ValueError(f"statistics/{key}/{source}/{missing[0]}: missing, and normalising {key} needs it "
                                 f"(exclude {key!r} to leave it as stored)")
        kw: dict[str, np.ndarray] = {}
        for key in ("images", "videos"):
            if key in stats:
                kw["images_mean"] = np.asarray(stats[key]["mean"])[()]
                kw["images_std"] = np.asarray(stats[key]["std"])[()]
        if "responses" in stats:
            s = np.array(stats["responses"]["std"])
            threshold = 0.01 * s.mean()
            precision = np.ones_like(s) / threshold
            idx = s > threshold
            precision[idx] = 1 / s[idx]
            kw["response_precision"] = precision
        if "behavior" in stats:
            kw["behavior_precision"] = 1 / np.array(stats["behavior"]["std"])
        if "pupil_center" in stats:
            kw["pupil_mean"] = np.array(stats["pupil_center"]["mean"])
            kw["pupil_std"] = np.array(stats["pupil_center"]["std"])
        return cls(**kw)

    def map(self, f) -> Normalizer:
        """The same normaliser with each constant replaced by ``f(key, constant)`` (e.g. as a DataArray)."""
        keys = {"images_mean": "images", "images_std": "images", "response_precision": "responses",
                "behavior_precision": "behavior", "pupil_mean": "pupil_center", "pupil_std": "pupil_center"}
        return Normalizer(**{name: None if getattr(self, name) is None else f(key, getattr(self, name)) for name, key in keys.items()})

    def steps(self, key: str) -> list[tuple[str, object]]:
        """The operations that normalise ``key``, in order: ``("sub" | "div" | "mul", constant)``.

        `__call__` and `inverse` apply them; so does `converter.read.device` on a torch device.
        """
        if key in ("images", "videos") and self.images_mean is not None:
            return [("sub", self.images_mean), ("div", self.images_std)]
        if key == "responses" and self.response_precision is not None:
            return [("mul", self.response_precision)]
        if key == "behavior" and self.behavior_precision is not None:
            return [("mul", self.behavior_precision)]
        if key == "pupil_center" and self.pupil_mean is not None:
            return [("sub", self.pupil_mean), ("div", self.pupil_std)]
        return []

    def __call__(self, key: str, x):
        """Normalise the values of ``key`` (numpy, xarray or torch; trailing dims per trial)."""
        for op, c in self.steps(key):
            x = OPERATIONS[op](x, c)
        return x

    def in_place(self, key: str, x: np.ndarray) -> np.ndarray:
        """`__call__` on a numpy array the caller lets it overwrite: each step in place while it
        keeps ``x``'s dtype and shape (the same bits, without new memory), else as `__call__`."""
        for op, c in self.steps(key):
            if np.result_type(x, c) == x.dtype and np.broadcast_shapes(x.shape, np.shape(c)) == x.shape:
                UFUNCS[op](x, c, out=x)
            else:
                x = OPERATIONS[op](x, c)
        return x

    def inverse(self, key: str, x):
        """Undo `__call__` (as ``NeuroNormalizer.inv`` does)."""
        for op, c in reversed(self.steps(key)):
            x = OPERATIONS[_UNDO[op]](x, c)
        return x


# Each step of `Normalizer.steps` (and its undoing) as an operation on numpy, xarray or torch values.
OPERATIONS = {"sub": lambda x, c: x - c, "add": lambda x, c: x + c, "mul": lambda x, c: x * c, "div": lambda x, c: x / c}
UFUNCS = {"sub": np.subtract, "add": np.add, "mul": np.multiply, "div": np.true_divide}  # the same, as numpy ufuncs (``out=``)
_UNDO = {"sub": "add", "div": "mul", "mul": "div"}


def standardize(responses, std):
    """The competition's standardised responses, ``r / std`` (std over the training tier)."""
    return responses / std


def add_channels(images: np.ndarray, *extra: np.ndarray) -> np.ndarray:
    """Append per-trial values as constant image channels, as ``AddBehaviorAsChannels`` does.

    ``images`` is ``(..., C, H, W)`` and each of ``extra`` ``(..., K)``; the result is
    ``(..., C + sum(K), H, W)`` in the dtype numpy gives ``ones(float64) * values``
    (the official loader's float32 cast follows).
    """
    parts = [images]
    h, w = images.shape[-2:]
    for values in extra:
        parts.append(np.ones((1, h, w)) * values[..., :, None, None])
    return np.concatenate(parts, axis=-3)
