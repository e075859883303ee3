"""Reading .npy bytes: exact values for every layout numpy writes, refusal of the rest."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from converter.errors import SourceError
from converter.source.npy import array_from_bytes, parse_header, to_native


def npy_bytes(a: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


dtypes = st.sampled_from(["<f4", ">f4", "<f8", ">f8", "<i8", ">i8", "<u2", ">i2", "u1", "i1", "?", "<U7", ">U3", "S5", "<c8"])


@settings(max_examples=150, deadline=None)
@given(data=st.data(), dtype=dtypes, fortran=st.booleans())
def test_round_trip_any_shape_dtype_and_order(data, dtype, fortran):
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    a = data.draw(hnp.arrays(np.dtype(dtype), shape))
    if fortran:
        a = np.asfortranarray(a)
    got = array_from_bytes(npy_bytes(a), "x.npy")
    assert got.dtype == a.dtype and got.shape == a.shape
    assert to_native(got).tobytes() == to_native(a).tobytes()  # bitwise: NaN payloads and -0.0 too


def test_header_is_cached_but_errors_name_each_file():
    good = npy_bytes(np.zeros(3, "<f4"))
    assert parse_header(good, "a.npy") is parse_header(good, "b.npy")
    with pytest.raises(SourceError, match="^b.npy: truncated"):
        array_from_bytes(good[:-1], "b.npy")


def test_pickled_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    raw = npy_bytes(np.array([Payload()], dtype=object), allow_pickle=True)
    with pytest.raises(SourceError, match="refusing to unpickle"):
        array_from_bytes(raw, "evil.npy")
    assert not marker.exists()
    # the payload really is live: unpickling it would have created the file
    pickle.loads(pickle.dumps(Payload()))
    assert marker.exists()
    os.remove(marker)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b"\x93NUMPZ" + b[6:], "wrong magic"),  # not the magic string
        (lambda b: b[:9], "not a .npy file"),  # shorter than any header
        (lambda b: b[:20], "truncated .npy header"),  # header cut
        (lambda b: b[:-4], "truncated: header declares 40 data bytes, file has 36"),  # data cut
        (lambda b: b + b"\0" * 8, "8 unexpected bytes"),  # trailing garbage
        (lambda b: b.replace(b"'<f4'", b"'<zz'"), "malformed .npy header"),  # unknown dtype
        (lambda b: b.replace(b"(10,)", b"(-1,)"), "malformed .npy header"),  # negative size
        (lambda b: b[:6] + b"\x09" + b[7:], "unsupported .npy format version 9"),
        (lambda b: b.replace(b"(10,)", b"(99,)"), "header declares 396 data bytes, file has 40"),  # lies about size
    ],
)
def test_damaged_files_are_named_in_one_line(mangle, message):
    raw = mangle(npy_bytes(np.arange(10, dtype="<f4")))
    with pytest.raises(SourceError, match=message) as e:
        array_from_bytes(raw, "data/responses/3.npy")
    assert str(e.value).startswith("data/responses/3.npy: ") and "\n" not in str(e.value)
