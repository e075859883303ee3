"""Synthetic datasets in the real Sensorium 2022 file layout, as a folder or a zip.

Values are realistic in kind (integer-valued 0-255 images, sparse heavy-tailed
non-negative responses that depend on the image, plausible behavior and eye position)
so that compression, statistics and normalisation behave as on real data.  Generation
streams in blocks of trials, so the real sizes need little memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import StoreError
from .sample_video import video_tiers, video_sample_name, write_video_sample
from .storage import check_creatable, discard_zip, first_missing

COMPETITIONS = ("none", "sensorium", "sensorium+")
_SESSION = {"none": 1, "sensorium": 2, "sensorium+": 3}
_AREAS = np.array(["V1", "V1", "V1", "LM"])
_LAYERS = np.array(["L2/3", "L2/3", "L4"])
_BLOCK = 512
_REPEATS = 10


def sample_name(seed: int = 0, competition: str = "none") -> str:
    """Folder name of a sample dataset, in the pattern of the real ones."""
    animal, session, scan = 90000 + seed % 10000, _SESSION[competition], 1
    digest = hashlib.md5(f"{seed}-{competition}".encode()).hexdigest()
    return f"static{animal}-{session}-{scan}-GrayImageNet-{digest}"


def _tiers(n_trials: int, competition: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tier labels and image ids per trial, in random (file) order."""
    repeats = _REPEATS if n_trials >= 20 * _REPEATS else 2
    n_test_images = max(1, round(n_trials * 0.144) // repeats)
    test_tiers = ["test", "final_test"] if competition != "none" else ["test"]
    n_val = max(1, round(n_trials * 0.075))
    n_train = n_trials - n_val - len(test_tiers) * n_test_images * repeats
    if n_train < 1:
        raise ValueError(f"--trials {n_trials} is too few for the tiers of this variant")
    # Test images are common to every scan (as the live test images are), so their
    # ids come from a fixed stream; the others are unique per scan.
    fixed = np.random.default_rng(12345).choice(np.arange(1_000, 100_000), 2 * n_test_images, replace=False)
    unique = rng.choice(np.arange(100_000, 1_000_000), n_train + n_val, replace=False)
    tiers = ["train"] * n_train + ["validation"] * n_val
    ids = list(unique)
    for k, tier in enumerate(test_tiers):
        tiers += [tier] * (n_test_images * repeats)
        ids += list(np.repeat(fixed[k * n_test_images : (k + 1) * n_test_images], repeats))
    order = rng.permutation(n_trials)
    return np.array(tiers)[order], np.array(ids, dtype=np.int64)[order]


IMAGE_KINDS = ("smooth", "noise")
# ``noise`` images add i.i.d. Gaussian pixel noise of this standard deviation to the smooth
# image: about 6.4 bits of entropy per pixel, against white noise's 8, so that they compress
# and decode about as hard as the least compressible real stimuli.
NOISE_SD = 20.0


def _image(image_id: int, shape: tuple[int, int], kind: str = "smooth") -> np.ndarray:
    """A grey image, integer-valued on 0-255, the same for one id: 1/f noise (``smooth``,
    natural-looking), or that plus i.i.d. pixel noise (``noise``)."""
    img = _smooth(image_id, shape)
    if kind == "noise":
        img = img + np.random.default_rng(int(image_id) + 1).normal(0, NOISE_SD, shape)
    return np.clip(np.round(img), 0, 255)


def _smooth(image_id: int, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(int(image_id))
    h, w = shape
    spec = np.fft.rfft2(rng.standard_normal((h, w)))
    spec /= np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]) + 1.0 / w
    img = np.fft.irfft2(spec, s=(h, w))
    return (img - img.mean()) / (img.std() + 1e-12) * 45 + 128


class _Out:
    """Writes files of the tree into a folder or into a zip under one top folder.

    Everything goes to a temporary name beside the target, renamed to it by `finish`;
    `discard` removes it, so an interrupted sample never leaves a dataset that looks whole.
    """

    def __init__(self, target: Path, name: str, as_zip: bool) -> None:
        self.top = name
        self.target = target
        self.path = self.partial(target)
        if as_zip:
            self.zf: zipfile.ZipFile | None = zipfile.ZipFile(self.path, "w", zipfile.ZIP_DEFLATED, compresslevel=1)
            self._dirs: set[str] = set()
        else:
            self.zf = None

    def save(self, rel: str, arr: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        if self.zf is None:
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(buf.getvalue())
            return
        parts = f"{self.top}/{rel}".split("/")
        for k in range(1, len(parts)):
            d = "/".join(parts[:k]) + "/"
            if d not in self._dirs:
                self._dirs.add(d)
                self.zf.writestr(zipfile.ZipInfo(d, (2022, 6, 1, 0, 0, 0)), b"")
        info = zipfile.ZipInfo(f"{self.top}/{rel}", (2022, 6, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        self.zf.writestr(info, buf.getvalue(), compresslevel=1)

    def finish(self, overwrite: bool) -> Path:
        if self.zf is not None:
            self.zf.close()
        if overwrite and self.target.is_dir():
            shutil.rmtree(self.target)
        os.replace(self.path, self.target)
        return self.target

    @staticmethod
    def partial(target: Path) -> Path:
        """Where this process writes ``target`` until it is whole."""
        return target.with_name(f".{target.name}.{os.getpid()}.partial")

    @staticmethod
    def discard_partial(target: Path) -> None:
        """Remove this process's partial file or folder for ``target``, whatever state it is in."""
        path = _Out.partial(target)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def discard(self) -> None:
        if self.zf is not None:
            discard_zip(self.zf, self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def _stats(x: np.ndarray, axis) -> dict[str, np.ndarray]:
    return {
        "mean": x.mean(axis=axis),
        "std": x.std(axis=axis),
        "min": x.min(axis=axis),
        "max": x.max(axis=axis),
        "median": np.median(x, axis=axis),
    }


def make_sample(
    dest: str | os.PathLike,
    *,
    trials: int = 200,
    neurons: int = 150,
    competition: str = "none",
    as_zip: bool = False,
    seed: int = 0,
    image_dtype: str = "float32",
    image_shape: tuple[int, int] = (144, 256),
    images: str = "smooth",
    progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
    video: bool = False,
    frames: int = 300,
    video_shape: tuple[int, int] = (36, 64),
    dynamic: bool | None = None,
) -> Path:
    """Write a synthetic dataset under ``dest``; return the dataset folder or zip.

    ``video`` writes a Sensorium 2023 video scan instead (`converter.sample_video`): clips of
    ``video_shape`` padded with NaN to ``frames`` frames (``competition`` and the image
    options do not apply).  ``images`` is ``"smooth"`` (1/f noise, which compresses well) or
    ``"noise"`` (the same plus pixel noise: hard to compress, like the least regular real images).

    ``competition`` is ``"none"`` (a pre-training scan), ``"sensorium"`` (responses of
    the test tiers, behavior and pupil center zeroed) or ``"sensorium+"`` (responses of
    the test tiers zeroed); both competition variants hash ``trial_idx``.  An existing
    dataset of the same name is refused unless ``overwrite``; the dataset appears under its
    name only once it is complete.  ``dynamic`` is 0.7's name of ``video`` (deprecated).
    """
    if dynamic is not None:
        warnings.warn("make_sample(dynamic=...) is now make_sample(video=...); the old name goes in 1.0",
                      DeprecationWarning, stacklevel=2)
        video = dynamic
    if competition not in COMPETITIONS:
        raise ValueError(f"competition must be one of {COMPETITIONS}, not {competition!r}")
    if image_dtype not in ("float32", "uint8"):
        raise ValueError(f"image_dtype must be float32 or uint8, not {image_dtype!r}")
    if images not in IMAGE_KINDS:
        raise ValueError(f"images must be one of {IMAGE_KINDS}, not {images!r}")
    if neurons < 1 or trials < 1 or seed < 0:
        raise ValueError(f"need trials >= 1, neurons >= 1 and seed >= 0 (got {trials}, {neurons}, {seed})")
    if video and (frames < 1 or min(video_shape) < 1):
        raise ValueError(f"need frames >= 1 and a video shape of at least 1x1 (got {frames}, {video_shape})")
    rng = np.random.default_rng(seed)
    if video:
        video_tiers(trials, np.random.default_rng(seed))  # may refuse too few trials: before anything is written
    else:
        tiers, image_ids = _tiers(trials, competition, rng)
    dest = Path(dest)
    name = video_sample_name(seed) if video else sample_name(seed, competition)
    target = dest / (f"{name}.zip" if as_zip else name)
    if target.exists() and not overwrite:
        raise StoreError(f"{target}: already exists (use --overwrite to replace it)")
    check_creatable(target)
    created = first_missing(dest)  # removed again if the sample is not finished
    out = None
    try:
        dest.mkdir(parents=True, exist_ok=True)
        out = _Out(target, name, as_zip)  # inside: a Ctrl-C just after it made its partial file still cleans up
        if video:
            write_video_sample(out.save, rng, trials, neurons, frames, seed, video_shape, progress)
        else:
            _write(out, rng, tiers, image_ids, trials, neurons, competition, seed, image_dtype, image_shape, progress, images)
        return out.finish(overwrite)
    except BaseException:
        if out is not None:
            out.discard()
        else:
            _Out.discard_partial(target)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def _write(out: _Out, rng, tiers, image_ids, trials: int, neurons: int, competition: str, seed: int, image_dtype: str,
           image_shape: tuple[int, int], progress, images: str = "smooth") -> None:
    """Every file of the sample, through ``out``."""

    # Per-neuron tuning: a baseline rate and a sparse image-dependent gain.
    rate = rng.lognormal(-1.0, 0.8, neurons).astype(np.float32)
    train = tiers == "train"
    train_resp = np.empty((int(train.sum()), neurons), dtype=np.float32)
    behavior = np.empty((trials, 3), dtype=np.float32)
    pupil = np.empty((trials, 2), dtype=np.float32)
    hist = np.zeros(256, dtype=np.int64)
    img_sum = img_sq = 0.0
    withhold_responses = np.isin(tiers, ["test", "final_test"]) if competition != "none" else np.zeros(trials, bool)
    withhold_behavior = competition == "sensorium"
    k_train = 0
    for start in range(0, trials, _BLOCK):
        block = range(start, min(start + _BLOCK, trials))
        for i in block:
            img = _image(image_ids[i], image_shape, images)
            if train[i]:
                hist += np.bincount(img.astype(np.int64).ravel(), minlength=256)
                img_sum += float(img.sum())
                img_sq += float((img * img).sum())
            out.save(f"data/images/{i}.npy", img.astype(image_dtype)[None])
            drive = np.random.default_rng(int(image_ids[i]) + 7).gamma(0.4, 1.0, neurons).astype(np.float32)
            resp = rate * drive * rng.gamma(2.0, 0.5, neurons).astype(np.float32)
            resp[rng.random(neurons) < 0.35] = 0.0
            beh = np.array([rng.normal(18, 4), rng.normal(0, 1.5), abs(rng.normal(0, 6))], dtype=np.float32)
            pc = np.array([rng.normal(210, 12), rng.normal(130, 9)], dtype=np.float32)
            behavior[i], pupil[i] = beh, pc
            if train[i]:
                train_resp[k_train] = resp
                k_train += 1
            out.save(f"data/responses/{i}.npy", np.zeros_like(resp) if withhold_responses[i] else resp)
            out.save(f"data/behavior/{i}.npy", np.zeros_like(beh) if withhold_behavior else beh)
            out.save(f"data/pupil_center/{i}.npy", np.zeros_like(pc) if withhold_behavior else pc)
        if progress is not None:
            progress(len(block))

    # meta/statistics: over the training tier, before anything was withheld.
    n_px = hist.sum()
    mean = img_sum / n_px
    cdf = np.cumsum(hist)
    image_stats = {
        "mean": mean,
        "std": np.sqrt(max(img_sq / n_px - mean * mean, 0.0)),
        "min": float(np.nonzero(hist)[0][0]),
        "max": float(np.nonzero(hist)[0][-1]),
        "median": float((np.searchsorted(cdf, (n_px - 1) // 2 + 1) + np.searchsorted(cdf, n_px // 2 + 1)) / 2),
    }
    per_key = {
        "images": {k: np.asarray(v, dtype=np.float32) for k, v in image_stats.items()},
        "responses": _stats(train_resp, 0),
        "behavior": _stats(behavior[train], 0),
        "pupil_center": _stats(pupil[train], 0),
    }
    for key, stats in per_key.items():
        for source in ("all", "stimulus_frame"):
            for stat, value in stats.items():
                out.save(f"meta/statistics/{key}/{source}/{stat}.npy", np.asarray(value, dtype=np.float32))

    # meta/trials
    order = rng.permutation(trials)
    if competition == "none":
        trial_idx = order.astype(np.int64)
    else:
        trial_idx = np.array([hashlib.md5(f"{seed}:{t}".encode()).hexdigest() for t in order])
    t0 = np.datetime64("2019-09-18T15:25:10.617")
    ts = t0 + order.astype("timedelta64[ms]") * 1517
    trial_meta = {
        "tiers": tiers,
        "frame_image_id": image_ids,
        "frame_image_class": np.array(["imagenet"] * trials),
        "trial_idx": trial_idx,
        "frame_trial_ts": np.array([f"Timestamp('{str(t).replace('T', ' ')}000')" for t in ts]),
        "condition_hash": np.array([hashlib.sha1(str(i).encode()).hexdigest()[:20] for i in image_ids]),
        "frame_last_flip": (order.astype(np.int64) * 1517 + 10_000_000),
        "frame_pre_blank_period": np.full(trials, 0.3, dtype=np.float64) + rng.random(trials) * 0.2,
        "frame_presentation_time": np.full(trials, 0.5, dtype=np.float64),
        "animal_id": np.full(trials, 90000 + seed % 10000, dtype=np.int64),
        "session": np.full(trials, _SESSION[competition], dtype=np.int64),
        "scan_idx": np.full(trials, 1, dtype=np.int64),
    }
    for name, arr in trial_meta.items():
        out.save(f"meta/trials/{name}.npy", arr)

    # meta/neurons
    neuron_meta = {
        "unit_ids": np.cumsum(rng.integers(1, 4, neurons)).astype(np.int64),
        "area": _AREAS[rng.integers(0, len(_AREAS), neurons)],
        "layer": _LAYERS[rng.integers(0, len(_LAYERS), neurons)],
        "cell_motor_coordinates": np.round(rng.uniform([-400, -400, 100], [400, 400, 400], (neurons, 3)), 1),
        "animal_ids": np.full(neurons, 90000 + seed % 10000, dtype=np.int64),
        "sessions": np.full(neurons, _SESSION[competition], dtype=np.int64),
        "scan_idx": np.full(neurons, 1, dtype=np.int64),
    }
    for name, arr in neuron_meta.items():
        out.save(f"meta/neurons/{name}.npy", arr)
