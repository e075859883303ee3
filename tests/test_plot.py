"""The one-page overview: drawn from the store alone, withheld data shown as withheld."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import converter

from .conftest import run_cli

pytest.importorskip("matplotlib")


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_overview_panels(make_store):
    from converter.plot import overview

    fig = overview(converter.open_mouse(make_store("none", trials=400, neurons=60)))
    got = " | ".join(titles(fig))
    for panel in ("trials per tier", "image ", "population response", "neuron positions, by area",
                  "reliability (oracle correlation), test repeats", "behavior and pupil over trials"):
        assert panel in got, got
    behavior = next(ax for ax in fig.axes if ax.get_title() == "behavior and pupil over trials")
    assert "time order" in behavior.get_xlabel() and len(behavior.lines) == 5  # 3 behavior + 2 pupil variables


def test_withheld_is_shown_as_withheld(make_store):
    from converter.plot import overview

    fig = overview(converter.open_mouse(make_store("sensorium", trials=400, neurons=60)))
    texts = {ax.get_title(): " ".join(t.get_text() for t in ax.texts) for ax in fig.axes}
    assert "withheld" in texts["reliability (oracle correlation)"]  # test responses are withheld: no histogram
    population = next(ax for ax in fig.axes if ax.get_title().startswith("population response"))
    assert "test" not in population.get_title() and "final_test" not in population.get_title()  # only measured trials


def test_show_writes_a_png_and_touches_no_global_state(make_store, tmp_path):
    store = make_store("none", trials=400, neurons=60)
    r = run_cli("show", store, "--out", tmp_path / "fig" / "o.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fig" / "o.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # (reading rcParams["backend"] would itself import pyplot to resolve it: every other key is compared)
    code = ("import io, sys, matplotlib; rc = lambda: {k: str(matplotlib.rcParams[k]) for k in matplotlib.rcParams if k != 'backend'}; "
            "before = rc(); import converter, converter.plot; "
            f"converter.plot.overview(converter.open_mouse({str(store)!r})).savefig(io.BytesIO(), format='png'); "
            "assert 'matplotlib.pyplot' not in sys.modules and rc() == before")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_show_without_matplotlib_is_one_sentence(make_store, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; sys.modules['matplotlib.figure'] = None; "
            "from converter.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "show", str(make_store()), "--out", str(tmp_path / "o.png")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "pip install 'sensorium-zarr[plot]'" in r.stderr, r.stderr


def test_video_overview_from_the_show_command(clip_store, tmp_path):
    from converter.plot import overview

    store = clip_store
    fig = overview(converter.open_mouse(store))
    got = " | ".join(titles(fig))
    for panel in ("trials per tier", "frame 0", "population response, trial", "valid frames (padded to 33)",
                  "neuron positions", "behavior and pupil, trial", "reliability"):
        assert panel in got, got
    assert "end within the first 50 frames" in " ".join(t.get_text() for ax in fig.axes for t in ax.texts)  # 33 frames
    population = next(ax for ax in fig.axes if ax.get_title().startswith("population response"))
    assert any("padding from frame" in t.get_text() for t in population.get_legend().get_texts())  # a padded trial is drawn
    behavior = next(ax for ax in fig.axes if ax.get_title().startswith("behavior and pupil"))
    assert len(behavior.lines) == 4
    r = run_cli("show", store, "--out", tmp_path / "v.png", "--dpi", "40")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "v.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_video_reliability_is_the_oracle_of_the_repeated_clips(make_store):
    from converter.plot import overview

    store = make_store(video=True, trials=40, neurons=6, frames=64)  # frames past the 50 that scoring skips
    fig = overview(converter.open_mouse(store))
    reliability = next(ax for ax in fig.axes if ax.get_title().startswith("reliability"))
    assert reliability.get_title() == "reliability, oracle repeats"
    oracle = converter.oracle(store)  # six neurons: all of them are drawn
    assert reliability.get_legend().get_texts()[0].get_text() == f"mean {oracle.attrs['mean']:.2f}"
    assert sum(p.get_height() for p in reliability.patches) == np.isfinite(oracle.values).sum()


def test_converter_plot_after_a_plain_import(make_store):
    import subprocess
    import sys

    code = f"import converter; ds = converter.open_mouse({str(make_store())!r}); print(type(converter.plot.overview(ds)).__name__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "Figure", r.stderr
