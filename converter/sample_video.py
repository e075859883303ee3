"""Synthetic Sensorium 2023 scans: one clip per trial, in the release's file layout.

Each file of a trial ends in its frame axis: ``videos`` ``(height, width, frames)``,
``responses`` ``(neurons, frames)``, ``behavior`` and ``pupil_center`` ``(2, frames)``.
Every trial is padded with NaN to one frame count; the test tiers' responses are zero-filled
dummies, as in the public release.  Oracle trials repeat a few clips.  Statistics cover the
valid frames of the training tier, one value per neuron (or channel) as ``(n, 1)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

_ANIMAL = 29000
_TEST_TIERS = ("live_test_main", "live_test_bonus", "final_test_main", "final_test_bonus")


def video_sample_name(seed: int = 0) -> str:
    """Folder name of a synthetic 2023 scan, in the pattern of the real ones."""
    digest = hashlib.md5(f"{seed}-video".encode()).hexdigest()
    return f"dynamic{_ANIMAL + seed % 1000}-1-1-Video-{digest}"


def video_tiers(n_trials: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tier and clip id per trial, in random (file) order; oracle trials repeat their clips."""
    repeats = 10 if n_trials >= 200 else 2
    n_oracle = max(1, round(n_trials * 0.06) // repeats) * repeats
    sizes = {"oracle": n_oracle, "none": max(1, round(n_trials * 0.02))}
    for t in _TEST_TIERS:
        sizes[t] = max(1, round(n_trials * (0.05 if t.endswith("main") else 0.03)))
    n_train = n_trials - sum(sizes.values())
    if n_train < 1:
        raise ValueError(f"--trials {n_trials} is too few for the tiers of a 2023 scan (at least {n_trials - n_train + 1})")
    tiers = ["train"] * n_train + [t for t, n in sizes.items() for _ in range(n)]
    unique = rng.choice(np.arange(1_000, 1_000_000), n_trials, replace=False)
    ids = unique.copy()
    start = n_train
    ids[start : start + n_oracle] = np.repeat(unique[start : start + n_oracle // repeats], repeats)
    order = rng.permutation(n_trials)
    return np.array(tiers)[order], ids[order]


def clip(clip_id: int, shape: tuple[int, int], frames: int) -> np.ndarray:
    """A smooth, moving grey clip ``(height, width, frames)`` on 0-255, the same for one id."""
    rng = np.random.default_rng(int(clip_id))
    h, w = shape
    coarse = rng.standard_normal((-(-h // 4), -(-w // 4), -(-frames // 6))).astype(np.float32)
    fine = coarse.repeat(4, 0)[:h].repeat(4, 1)[:, :w].repeat(6, 2)[:, :, :frames]
    return np.clip(np.round(fine * 45 + 128), 0, 255).astype(np.float32)


def write_video_sample(save: Callable[[str, np.ndarray], None], rng: np.random.Generator, trials: int, neurons: int,
                       frames: int, seed: int, video_shape: tuple[int, int], progress) -> None:
    """Every file of a synthetic 2023 scan, through ``save(rel, array)``."""
    tiers, ids = video_tiers(trials, rng)
    lengths = np.where(tiers == "train", rng.integers(max(1, frames * 2 // 3), frames + 1, trials), frames)
    lengths[rng.random(trials) < 0.5] = frames  # half the trials fill every frame
    rate = rng.lognormal(-1.0, 0.8, (neurons, 1)).astype(np.float32)
    gain = rng.normal(0.0, 0.6, (neurons, 1)).astype(np.float32)
    acc = {k: _Moments() for k in ("videos", "responses", "behavior", "pupil_center")}
    for i in range(trials):
        n = int(lengths[i])
        video = clip(ids[i], video_shape, frames)
        lum = (video.mean(axis=(0, 1)) - 128) / 20
        resp = rate * np.maximum(1 + gain * lum, 0) * rng.standard_exponential((neurons, frames), dtype=np.float32)
        t = np.arange(frames, dtype=np.float32)
        beh = np.stack([18 + 3 * np.sin(t / 40 + rng.uniform(0, 6)), np.abs(rng.normal(0, 6)) + rng.normal(0, 0.5, frames)])
        pupil = np.stack([210 + np.cumsum(rng.normal(0, 0.3, frames)), 130 + np.cumsum(rng.normal(0, 0.3, frames))])
        arrays = {"videos": video, "responses": resp, "behavior": beh.astype(np.float32), "pupil_center": pupil.astype(np.float32)}
        for key, a in arrays.items():
            a[..., n:] = np.nan
            if tiers[i] == "train":
                acc[key].add(a[..., :n])
        if tiers[i] in _TEST_TIERS:
            arrays["responses"] = np.zeros_like(resp)  # the public release's dummies
        for key, a in arrays.items():
            save(f"data/{key}/{i}.npy", a)
        if progress is not None:
            progress(1)
    for key, m in acc.items():
        for stat, value in m.result(scalar=key == "videos").items():
            save(f"meta/statistics/{key}/all/{stat}.npy", value)
    animal = _ANIMAL + seed % 1000
    trial_meta = {"tiers": tiers, "animal_id": np.full(trials, animal), "session": np.full(trials, 1),
                  "scan_idx": np.full(trials, 1), "trial_idx": np.arange(trials)}
    for name, arr in trial_meta.items():
        save(f"meta/trials/{name}.npy", arr)
    neuron_meta = {
        "unit_ids": np.cumsum(rng.integers(1, 4, neurons)).astype(np.int64),
        "cell_motor_coordinates": np.round(rng.uniform([-400, -400, 100], [400, 400, 400], (neurons, 3)), 1),
        "animal_ids": np.full(neurons, animal),
        "sessions": np.full(neurons, 1),
        "scan_idx": np.full(neurons, 1),
    }
    for name, arr in neuron_meta.items():
        save(f"meta/neurons/{name}.npy", arr)


class _Moments:
    """Running mean, std, min and max per row of ``(rows, frames)`` pieces; median from a subsample."""

    def __init__(self) -> None:
        self.n = 0
        self.s = self.ss = self.lo = self.hi = None
        self.some: list[np.ndarray] = []

    def add(self, a: np.ndarray) -> None:
        a = a.reshape(-1, a.shape[-1]).astype(np.float64)
        if self.s is None:
            self.s, self.ss = np.zeros(len(a)), np.zeros(len(a))
            self.lo, self.hi = np.full(len(a), np.inf), np.full(len(a), -np.inf)
        self.n += a.shape[1]
        self.s += a.sum(1)
        self.ss += (a * a).sum(1)
        self.lo, self.hi = np.minimum(self.lo, a.min(1)), np.maximum(self.hi, a.max(1))
        self.some.append(a[:, :: max(1, a.shape[1] // 4)])

    def result(self, scalar: bool) -> dict[str, np.ndarray]:
        if scalar:  # one value over every pixel
            n = self.n * len(self.s)
            mean = self.s.sum() / n
            out = {"mean": mean, "std": np.sqrt(max(self.ss.sum() / n - mean * mean, 0.0)), "min": self.lo.min(),
                   "max": self.hi.max(), "median": np.median(np.concatenate([x.ravel() for x in self.some]))}
            return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
        mean = self.s / self.n
        out = {"mean": mean, "std": np.sqrt(np.maximum(self.ss / self.n - mean * mean, 0.0)), "min": self.lo,
               "max": self.hi, "median": np.median(np.concatenate(self.some, axis=1), axis=1)}
        return {k: np.asarray(v, dtype=np.float32)[:, None] for k, v in out.items()}
