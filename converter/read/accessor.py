"""``ds.sensorium``: selections and transforms that read naturally on an opened store.

Registered when `converter` is imported; every method returns a new, still lazy,
`xarray.Dataset` (or a groupby), so the usual xarray idioms follow.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xarray as xr

from .. import contract
from .normalize import Normalizer, standardize
from .select import as_list, neurons_where


@xr.register_dataset_accessor("sensorium")
class SensoriumAccessor:
    """Selections by tier, image and neuron; repeats; normalisation (`Normalizer`)."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def tier(self, *tiers: str) -> xr.Dataset:
        """Trials of the given tier(s), e.g. ``ds.sensorium.tier("train")``.

        A tier the store does not have is a `ValueError` that lists the tiers it has.
        """
        have = self._ds[contract.TIER].values
        unknown = sorted(set(tiers) - set(have.tolist()))
        if unknown:
            raise ValueError(f"no tier {unknown[0]!r} in this dataset; it has {sorted(set(have.tolist()))}")
        return self._ds.isel(trial=np.flatnonzero(np.isin(have, tiers)))

    def images(self, image_ids: Iterable[int] | int) -> xr.Dataset:
        """Every trial that showed one of ``image_ids`` (repeats included), in trial order."""
        return self._ds.isel(trial=np.flatnonzero(np.isin(self._image_ids(), as_list(image_ids))))

    def _image_ids(self) -> np.ndarray:
        if contract.IMAGE_ID not in self._ds.coords:
            raise ValueError("no image_id coordinate: Sensorium 2023 clips have no shared id "
                             "(converter.oracle finds the repeats of a clip by its video)")
        return self._ds[contract.IMAGE_ID].values

    def neurons(self, *, area=None, layer=None, unit_ids=None) -> xr.Dataset:
        """Neurons by area and/or layer (any of the given values), or by unit ids in the order given."""
        ds = self._ds
        if unit_ids is not None:
            if area is not None or layer is not None:
                raise ValueError("select neurons either by unit_ids or by area/layer, not both")
            return ds.sel(neuron=as_list(unit_ids))
        info = {k: ds[k].values for k in (contract.AREA, contract.LAYER) if k in ds.coords}
        return ds.isel(neuron=neurons_where(info, ds.sizes[contract.NEURON], area, layer))

    @property
    def is_video(self) -> bool:
        """True for a Sensorium 2023 (video) store, or a selection of one: it has ``n_frames``."""
        return contract.N_FRAMES in self._ds.coords

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
        if not self.is_video:
            raise ValueError("no n_frames coordinate: not a Sensorium 2023 (video) store")
        keep = ds[contract.FRAME] < ds[contract.N_FRAMES]
        return ds.assign({name: v.where(keep) for name, v in ds.data_vars.items() if contract.FRAME in v.dims})

    def repeats(self, tiers: Iterable[str] = ("test", "final_test")) -> Repeats:
        """Trials of the repeated-image tiers grouped by ``image_id``.

        ``ds.sensorium.repeats().mean()`` is the mean response per image, and ``.var()``
        the variance across the repeats of each image (repeat-based metrics such as the
        oracle correlation use both).  Any other method is that of
        ``selected.groupby(contract.IMAGE_ID)``.  The selected trials are read into memory first,
        once; select the variables you need before (``ds[["responses"]]``).
        """
        self._image_ids()  # repeats are of images
        present = [t for t in as_list(tiers) if t in set(self._ds[contract.TIER].values.tolist())]
        selected = self.tier(*(present or as_list(tiers)))  # the defaults need not all exist
        return Repeats(selected.load() if not any(v.chunks for v in selected.data_vars.values()) else selected)

    def mask_withheld(self) -> xr.Dataset:
        """Each data variable with its withheld (all-zero) trials set to NaN."""
        ds = self._ds.copy()
        for key in ds.data_vars:
            if contract.withheld_name(key) in ds.coords and ds[key].dtype.kind == "f":
                ds[key] = ds[key].where(~self.withheld(key))
        return ds

    def normalizer(self, source: str = "all") -> Normalizer:
        """The `Normalizer` of this store's ``statistics/<key>/<source>``."""
        from .dataset import read_statistics

        return Normalizer.from_statistics(read_statistics(self._store(), source, self._ds.encoding.get("storage_options")))

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
        from .dataset import read_statistics

        std = read_statistics(self._store(), source, self._ds.encoding.get("storage_options"))["responses"]["std"]
        ds = self._ds.copy()
        ds["responses"] = standardize(ds["responses"], self._per_neuron(std))
        return ds

    def _apply(self, norm: Normalizer, inverse: bool) -> xr.Dataset:
        ds = self._ds.copy()
        f = norm.inverse if inverse else norm
        for key in ds.data_vars:
            x = ds[key]
            if key == "responses" and norm.response_precision is not None:
                # after a neuron selection, only the matching precisions apply
                p = self._per_neuron(norm.response_precision)
                y = x / p if inverse else x * p
            else:
                y = f(key, x)
            ds[key] = y.astype(np.float32).assign_attrs(x.attrs)
        return ds

    def _store(self) -> str:
        store = self._ds.encoding.get("source")
        if store is None:
            raise ValueError("this dataset does not know its store; open it with converter.open_mouse")
        return store

    def _per_neuron(self, values: np.ndarray) -> xr.DataArray:
        """A per-neuron statistic (``(neuron,)``, or a clip's ``(neuron, 1)``) for the selected neurons."""
        flat = np.asarray(values).reshape(len(values), -1)[:, 0]
        return xr.DataArray(flat[self._neuron_positions()], dims=(contract.NEURON,))

    def _neuron_positions(self) -> np.ndarray:
        """Positions of this dataset's neurons on the store's full neuron axis."""
        import pandas as pd

        from ..storage import open_array

        full = pd.Index(open_array(self._store(), "neuron", self._ds.encoding.get("storage_options"))[...])
        return full.get_indexer(self._ds.indexes["neuron"])


class Repeats:
    """The trials of one dataset grouped by ``image_id``: fast ``mean``/``var``/``std``/``count``.

    The store keeps the repeats of an image next to each other (README, "Trial order"),
    so a group is a run of rows and each reduction is one vectorised sum per
    variable and group, in the variable's dtype (float64 for integers); NaN is skipped, as
    xarray's ``groupby(...).mean()`` skips it.  Other methods go to the xarray groupby.
    """

    def __init__(self, ds: xr.Dataset) -> None:
        order = np.argsort(ds[contract.IMAGE_ID].values, kind="stable")
        self._ds = ds if np.all(order == np.arange(len(order))) else ds.isel(trial=order)
        ids = self._ds[contract.IMAGE_ID].values
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
            x = np.moveaxis(np.asarray(var.values), var.dims.index("trial"), 0)
            # floats are summed in their own dtype, as xarray does; integers in float64
            dtype = np.int64 if stat == "count" else (x.dtype if x.dtype.kind == "f" else np.dtype(np.float64))
            value = np.empty((len(self._starts), *x.shape[1:]), dtype=dtype)
            nan = x.dtype.kind == "f" and bool(np.isnan(x.sum()))  # a NaN (or inf - inf) somewhere: count per element
            for g, (a, b) in enumerate(zip(self._starts.tolist(), [*self._starts[1:].tolist(), len(x)])):
                rows = x[a:b] if x.dtype == dtype or stat == "count" else x[a:b].astype(dtype)
                n = (~np.isnan(rows)).sum(axis=0) if nan else b - a
                if stat == "count":
                    value[g] = n
                    continue
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = (np.nansum(rows, axis=0) if nan else rows.sum(axis=0)) / n
                    if stat == "mean":
                        value[g] = mean
                        continue
                    sq = (rows - mean) ** 2
                    v = (np.nansum(sq, axis=0) if nan else sq.sum(axis=0)) / (n - ddof)
                    v = np.where(np.asarray(n) - ddof > 0, v, np.nan)
                value[g] = np.sqrt(v) if stat == "std" else v
            value = np.moveaxis(value, 0, var.dims.index("trial"))
            dims = tuple("image_id" if d == "trial" else d for d in var.dims)
            out[name] = xr.Variable(dims, value, var.attrs)
        coords = {k: c for k, c in self._ds.coords.items() if "trial" not in c.dims}
        return xr.Dataset(out, coords={**coords, "image_id": ("image_id", self.image_ids)})

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
