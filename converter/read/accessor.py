"""``ds.sensorium``: selections and transforms that read naturally on an opened store.

Registered when `converter` is imported; every method returns a new, still lazy,
`xarray.Dataset` (or a groupby), so the usual xarray idioms follow.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from .. import contract
from ..kinds import ScanKind, kind_of, kind_of_source
from .normalize import Normalizer, standardize
from .statistics import trial_statistics
from .select import as_list, labels, neurons_where


@xr.register_dataset_accessor("sensorium")
class SensoriumAccessor:
    """Selections by tier, image and neuron; repeats; normalisation (`Normalizer`)."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def tier(self, *tiers: str | Iterable[str]) -> xr.Dataset:
        """Trials of the given tier(s), e.g. ``ds.sensorium.tier("train")``, ``tier("train", "test")``
        or ``tier(["train", "test"])``.

        A tier the store does not have, or one given twice, is a `ValueError` that names it.
        """
        tiers = labels(*tiers, what="tier")
        have = self._ds[contract.TIER].values
        unknown = sorted(set(tiers) - set(have.tolist()))
        if unknown:
            raise ValueError(f"no tier {unknown[0]!r} in this dataset; it has {sorted(set(have.tolist()))}")
        return self._ds.isel(trial=np.flatnonzero(np.isin(have, tiers)))

    def images(self, image_ids: Iterable[int] | int) -> xr.Dataset:
        """Every trial that showed one of ``image_ids`` (repeats included), in trial order."""
        return self._ds.isel(trial=np.flatnonzero(np.isin(self._image_ids(), labels(image_ids, what="image_id"))))

    def _image_ids(self) -> np.ndarray:
        if contract.IMAGE_ID not in self._ds.coords:
            raise ValueError("no image_id coordinate: the source had no meta/trials/frame_image_id.npy (Sensorium 2023 "
                             "clips have no shared id; converter.oracle finds the repeats of a clip by its video)")
        return self._ds[contract.IMAGE_ID].values

    def neurons(self, *, area=None, layer=None, unit_ids=None) -> xr.Dataset:
        """Neurons by area and/or layer (any of the given values), or by unit ids in the order given."""
        ds = self._ds
        if unit_ids is not None:
            if area is not None or layer is not None:
                raise ValueError("select neurons either by unit_ids or by area/layer, not both")
            return ds.sel(neuron=labels(unit_ids, what="unit id"))
        info = {k: ds[k].values for k in (contract.AREA, contract.LAYER) if k in ds.coords}
        return ds.isel(neuron=neurons_where(info, ds.sizes[contract.NEURON], area, layer))

    @property
    def kind(self) -> ScanKind:
        """The kind of scan (`converter.kinds`): from the store's schema version, kept by every selection."""
        return kind_of(self._ds.attrs) if "schema_version" in self._ds.attrs else kind_of_source(self._ds.data_vars)

    @property
    def is_video(self) -> bool:
        """True for a Sensorium 2023 (video) store, or a selection of one (``kind.frames``)."""
        return self.kind.frames

    def withheld(self, key: str = "responses") -> xr.DataArray:
        """Per trial, True where ``key`` is withheld (all zero in the release); all False where
        the store marks none."""
        flag = contract.withheld_name(key)
        if flag in self._ds.coords:
            return self._ds[flag]
        return xr.zeros_like(self._ds[contract.TRIAL], dtype=bool).rename(flag)

    def valid(self) -> xr.Dataset:
        """Sensorium 2023 clips with every frame past the trial's ``n_frames`` (the padding) set to NaN.

        Zero-filled test responses are padded with zeros, not NaN: this masks them too.
        Select trials first; a store opened with ``dask=True`` stays lazy.
        """
        ds = self._ds
        if contract.N_FRAMES not in ds.coords:
            raise ValueError("no n_frames coordinate: not a video scan (Sensorium 2023), or n_frames was dropped")
        keep = ds[contract.FRAME] < ds[contract.N_FRAMES]
        return ds.assign({name: v.where(keep) for name, v in ds.data_vars.items() if contract.FRAME in v.dims})

    def repeats(self, tiers: Iterable[str] = ("test", "final_test")) -> Repeats:
        """Trials of the repeated-image tiers grouped by ``image_id``.

        ``ds.sensorium.repeats().mean()`` is the mean response per image, and ``.var()``
        the variance across the repeats of each image (repeat-based metrics such as the
        oracle correlation use both).  Any other method is that of
        ``selected.groupby(contract.IMAGE_ID)``.  Results are lazy: only the variables whose
        values are asked for are read.
        """
        present = [t for t in as_list(tiers) if t in set(self._ds[contract.TIER].values.tolist())]
        return self.by_image(present or as_list(tiers))  # the defaults need not all exist

    def by_image(self, tiers: Iterable[str] | str | None = None) -> Repeats:
        """Trials grouped by ``image_id``, over the given tiers (default: every trial).

        ``ds.sensorium.by_image().mean().responses`` is the mean response to each image, as
        ``ds.responses.groupby("image_id").mean()`` gives it, from one pass over the trials.
        """
        self._image_ids()
        return Repeats(self._ds if tiers is None else self.tier(*as_list(tiers)))

    def mask_withheld(self) -> xr.Dataset:
        """Each data variable with its withheld (all-zero) trials set to NaN."""
        ds = self._ds.copy()
        for key in ds.data_vars:
            if contract.withheld_name(key) in ds.coords and ds[key].dtype.kind == "f":
                ds[key] = ds[key].where(~self.withheld(key))
        return ds

    def normalizer(self, source: str = "all") -> Normalizer:
        """The `Normalizer` of this store's ``statistics/<key>/<source>``, each statistic shaped to
        broadcast against one trial of its key."""
        keys = [k for k in self._ds.data_vars]
        return Normalizer.from_statistics(trial_statistics(self._store(), source, self._ds.encoding.get("storage_options"), keys), source)

    def normalize(self, source: str = "all") -> xr.Dataset:
        """Data variables as ``NeuroNormalizer`` gives them, cast to float32 (lazy)."""
        return self._apply(self.normalizer(source), inverse=False)

    def denormalize(self, source: str = "all") -> xr.Dataset:
        """Undo `normalize`, in float32 whatever the stored dtype.

        What is denormalised is often a model's output, which no integer dtype holds; for
        values that came from the store, ``.round().astype(x.attrs["source_dtype"])`` gives
        integer sources (uint8 images) back exactly.
        """
        return self._apply(self.normalizer(source), inverse=True)

    def standardize(self, source: str = "all") -> xr.Dataset:
        """``responses / std``: the competition's standardised responses."""
        stats = trial_statistics(self._store(), source, self._ds.encoding.get("storage_options"), ["responses"])
        if "std" not in stats.get("responses", {}):
            raise ValueError(f"statistics/responses/{source}/std: missing, and standardising needs it")
        ds = self._ds.copy()
        ds["responses"] = standardize(ds["responses"], self._labelled("responses", stats["responses"]["std"]))
        return ds

    def _apply(self, norm: Normalizer, inverse: bool) -> xr.Dataset:
        ds = self._ds.copy()
        video = "videos" in ds.data_vars
        norm = norm.map(lambda key, c: self._labelled("videos" if key == "images" and video else key, c))
        f = norm.inverse if inverse else norm
        for key in ds.data_vars:
            x = ds[key]
            ds[key] = f(key, x).astype(np.float32).assign_attrs(x.attrs)
        return ds

    def _labelled(self, key: str, c: np.ndarray) -> xr.DataArray | np.ndarray:
        """A constant shaped for one trial of ``key`` (`trial_statistics`) on this dataset's labels.

        Its axes of length 1 broadcast; the others become dims with the store's labels, selected as
        this dataset selects them (a subset of neurons, of frames).
        """
        if key not in self._ds.data_vars:
            return c
        dims = self._ds[key].dims[1:]
        keep = [k for k, n in enumerate(c.shape) if n != 1]
        out = xr.DataArray(c.reshape([c.shape[k] for k in keep]), dims=[dims[k] for k in keep])
        for d in out.dims:
            if d in self._ds.indexes:
                out = out.assign_coords({d: self._full_labels(d)}).sel({d: self._ds.indexes[d]})
        return out

    def _full_labels(self, dim: str) -> np.ndarray:
        """The labels of ``dim`` across the whole store (this dataset may hold a selection)."""
        from ..storage import open_array

        return open_array(self._store(), dim, self._ds.encoding.get("storage_options"))[...]

    def _store(self) -> str:
        store = self._ds.encoding.get("source")
        if store is None:
            raise ValueError("this dataset does not know its store; open it with converter.open_mouse")
        return store


class Repeats:
    """The trials of one dataset grouped by ``image_id``: fast ``mean``/``var``/``std``/``count``.

    The store keeps the repeats of an image next to each other (README, "Trial order"), so a
    group is a run of rows.  Each reduction returns a lazy `xarray.Dataset`: a variable is read
    and reduced (vectorised, in float64, then cast to the variable's float dtype; float64 for
    integers) only when its values are asked for, so ``repeats().mean()["responses"]`` reads
    the responses alone.  NaN is skipped, as xarray's ``groupby(...).mean()`` skips it.  Other
    methods go to the xarray groupby.
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds  # read in stored order (contiguous); the rows of an image are found by ``_order``
        self._order = np.argsort(ds[contract.IMAGE_ID].values, kind="stable")
        ids = ds[contract.IMAGE_ID].values[self._order]
        self._starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], dtype=np.intp)
        self.image_ids = ids[self._starts]

    def __getattr__(self, name: str):
        return getattr(self._ds.groupby(contract.IMAGE_ID), name)

    def __len__(self) -> int:
        return len(self.image_ids)

    def _reduce(self, stat: str, ddof: int = 0) -> xr.Dataset:
        out = {}
        for name, var in self._ds.data_vars.items():
            if "trial" not in var.dims or var.dtype.kind not in "fiub" or var.chunks:
                return getattr(self._ds.groupby(contract.IMAGE_ID), stat)(**({"ddof": ddof} if stat in ("var", "std") else {}))
            axis = var.dims.index("trial")
            dtype = np.dtype(np.int64) if stat == "count" else (var.dtype if var.dtype.kind == "f" else np.dtype(np.float64))
            shape = (*var.shape[:axis], len(self._starts), *var.shape[axis + 1 :])

            def compute(var=var, axis=axis, dtype=dtype) -> np.ndarray:
                x = np.moveaxis(np.asarray(var.values), axis, 0)
                return np.moveaxis(group_reduce(x, self._starts, stat, ddof, self._order).astype(dtype, copy=False), 0, axis)

            dims = tuple(contract.IMAGE_ID if d == "trial" else d for d in var.dims)
            out[name] = xr.Variable(dims, indexing.LazilyIndexedArray(_Reduction(compute, shape, dtype)), var.attrs)
        coords = {k: c for k, c in self._ds.coords.items() if "trial" not in c.dims}
        return xr.Dataset(out, coords={**coords, contract.IMAGE_ID: (contract.IMAGE_ID, self.image_ids)})

    def mean(self) -> xr.Dataset:
        """Mean over the repeats of each image."""
        return self._reduce("mean")

    def var(self, ddof: int = 0) -> xr.Dataset:
        """Variance over the repeats of each image (``ddof`` as in numpy)."""
        return self._reduce("var", ddof)

    def std(self, ddof: int = 0) -> xr.Dataset:
        """Standard deviation over the repeats of each image."""
        return self._reduce("std", ddof)

    def count(self) -> xr.Dataset:
        """Repeats of each image (non-NaN values per element)."""
        return self._reduce("count")


class _Reduction(BackendArray):
    """A reduction computed on first access (then kept), for a lazily indexed result variable."""

    def __init__(self, compute, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._compute, self.shape, self.dtype = compute, shape, dtype
        self._value: np.ndarray | None = None

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._get)

    def _get(self, key: tuple) -> np.ndarray:
        if self._value is None:
            self._value = self._compute()
        return self._value[key]


def group_reduce(x: np.ndarray, starts: np.ndarray, stat: str, ddof: int = 0, order: np.ndarray | None = None) -> np.ndarray:
    """``stat`` (mean, var, std or count) over runs of rows of ``x[order]`` starting at ``starts``
    (``order`` default: the rows as they are; ``x`` itself is never reordered).

    One vectorised sum per run, in float64 (a loop over runs: NumPy's cumulative sums and
    ``reduceat`` along rows are ~40x slower per element here).  NaN is skipped; a run with no
    more than ``ddof`` values gives NaN.
    """
    x = np.asarray(x)
    order = np.arange(len(x)) if order is None else np.asarray(order)
    out = np.empty((len(starts), *x.shape[1:]), dtype=np.int64 if stat == "count" else np.float64)
    nan = x.dtype.kind == "f" and bool(np.isnan(x.sum(dtype=np.float64)))  # a NaN (or inf - inf) somewhere
    sizes = np.diff(np.r_[starts, len(x)])
    if not nan:  # runs of one row (every image shown once: most of a scan) in one step
        one = sizes == 1
        rows = x[order[starts[one]]]
        out[one] = 1 if stat == "count" else rows if stat == "mean" else np.where(1 - ddof > 0, 0.0, np.nan)
        starts, sizes, where = starts[~one], sizes[~one], np.flatnonzero(~one)
    else:
        where = np.arange(len(starts))
    for g, a, b in zip(where.tolist(), starts.tolist(), (starts + sizes).tolist()):
        at = order[a:b]
        contiguous = at[-1] - at[0] == b - a - 1 and bool(np.all(np.diff(at) == 1))  # the store keeps repeats together
        rows = (x[at[0] : at[-1] + 1] if contiguous else x[at]).astype(np.float64)
        n = (~np.isnan(rows)).sum(axis=0) if nan else b - a
        if stat == "count":
            out[g] = n
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (np.nansum(rows, axis=0) if nan else rows.sum(axis=0)) / n
            if stat == "mean":
                out[g] = mean
                continue
            sq = (rows - mean) ** 2
            var = np.where(np.asarray(n) - ddof > 0, (np.nansum(sq, axis=0) if nan else sq.sum(axis=0)) / (n - ddof), np.nan)
        out[g] = np.sqrt(var) if stat == "std" else var
    return out
