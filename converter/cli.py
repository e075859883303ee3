"""The ``sensorium-zarr`` command: a thin layer over the Python API.

Exit codes: 0 success; 1 ``verify`` found mismatches, ``validate`` found the store
does not match its schema, or ``convert-all`` could not convert every dataset; 2 bad input
(malformed source, missing or incomplete store, DEST in the way, bad arguments, a URL whose
fsspec package is not installed); 3 the disk, bucket or cluster failed or cannot be reached
(full, read-only, permission denied, I/O error, no credentials, no answer, no such bucket, an
unreachable scheduler); 130 interrupted.  Output cut short by its reader (``| head``) ends
quietly with the code the command had.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from . import _startup
from ._version import __version__
from .errors import SourceError, StorageError, StoreError

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT, EXIT_STORAGE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors exit 2 too, on one line
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


class _Renamed(argparse.Action):
    """A flag that a release renamed: still works, and says once on stderr what replaces it."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"sensorium-zarr: {option_string} is now --{self.dest}; the old name goes in 1.0", file=sys.stderr)
        setattr(namespace, self.dest, True)


def _at_least(minimum: int):
    """An argparse type: an integer no smaller than ``minimum`` (a usage error otherwise, exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _local_path(text: str) -> Path:
    """An argparse type: a local path (these outputs are written with plain file I/O)."""
    if "://" in text:
        raise argparse.ArgumentTypeError(f"{text}: a local folder is needed here, not a URL")
    return Path(text)


class _Interrupts:
    """Ctrl-C for the command line: `KeyboardInterrupt` as usual, but remembered even where Python
    swallows it (in a finalizer or a callback), and ignored once the result is being reported.

    So a command either reports its result and exits with its code, or says it was interrupted
    and exits 130; never both, and never neither. One that lands in a finalizer or a weakref
    callback (zarr-python's event loop runs many), where Python can only print it, is raised
    again as soon as that returns, and not printed.
    """

    def __init__(self) -> None:
        self.hit = False
        self._previous = None
        self._hook = None

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        if self._hook is not None:
            sys.unraisablehook = self._hook

    def _handler(self, signum, frame) -> None:
        self.hit = True
        raise KeyboardInterrupt

    def _unraisable(self, unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and self.hit:
            import _thread

            # the signal again, sent from a thread that waits for nothing: our handler runs once the
            # finalizer has returned, and a blocking call of the main thread is woken for it
            if hasattr(signal, "pthread_kill"):
                _thread.start_new_thread(signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
            else:  # Windows
                _thread.start_new_thread(_thread.interrupt_main, ())
            return
        self._hook(unraisable)

    def settle(self) -> None:
        """The work is done: an interrupt that came (even one swallowed) counts; later ones are ignored."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.hit:
            raise KeyboardInterrupt


_interrupts = _Interrupts()


class _OutputClosed(BrokenPipeError):
    """The reader of our output closed it (``| head``): it has all it wanted."""


def _report(*lines: str) -> None:
    """Print a command's result: only once its work is done and no Ctrl-C came."""
    _interrupts.settle()
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        raise _OutputClosed() from None


def _progress(args) -> bool | None:
    return False if getattr(args, "quiet", False) else None


def _options(args) -> dict | None:
    """``--storage-option key=value`` pairs as fsspec storage options (``true``/``false`` as booleans)."""
    out = {}
    for item in getattr(args, "storage_option", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise StoreError(f"--storage-option {item!r}: expected key=value")
        out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out or None


def _sample(args) -> int:
    from .progress import Progress
    from .sample import make_sample

    if args.frames is not None and not args.video:
        raise StoreError("--frames applies to a 2023 video scan: add --video")
    trials = args.trials or (100 if args.video else 200)
    try:
        with Progress(trials, "sample", _progress(args)) as bar:
            path = make_sample(args.dest, trials=trials, neurons=args.neurons, competition=args.competition,
                               as_zip=args.zip, seed=args.seed, image_dtype=args.image_dtype, images=args.images, progress=bar,
                               overwrite=args.overwrite, video=args.video, frames=args.frames or 300)
    except ValueError as e:  # argument values make_sample cannot honour
        print(f"sensorium-zarr: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    _report(str(path))
    return EXIT_OK


def _convert(args) -> int:
    from .write.convert import run

    dest, status = run(_loc(args.src), _loc(args.dest), overwrite=args.overwrite, executor=args.workers,
                       progress=_progress(args), storage_options=_options(args))
    _report(*([] if args.quiet else
              [f"wrote {dest}" if status == "converted" else f"{dest}: already complete, converted from this source; nothing to do"]))
    return EXIT_OK


def _convert_all(args) -> int:
    from .write.batch import convert_all, format_summary

    rows = convert_all(_loc(args.src_dir), _loc(args.dest_dir), scheduler=args.scheduler, workers=args.workers,
                       progress=_progress(args), storage_options=_options(args))
    _report(format_summary(rows))
    return EXIT_OK if all(r.ok for r in rows) else EXIT_MISMATCH


def _verify(args) -> int:
    if len(args.paths) > 2:
        raise StoreError("verify takes DEST, or SRC DEST")
    if len(args.paths) == 1:
        from .integrity.export import self_check

        report = self_check(_loc(args.paths[0]), progress=_progress(args), storage_options=_options(args))
    else:
        from .integrity.verify import verify

        report = verify(*map(_loc, args.paths), workers=args.workers, progress=_progress(args), storage_options=_options(args))
    _report(str(report))
    return EXIT_OK if report.ok else EXIT_MISMATCH


def _export(args) -> int:
    from .integrity.export import export

    target = export(_loc(args.dest), args.out, as_zip=args.zip, progress=_progress(args), storage_options=_options(args))
    _report(str(target))
    return EXIT_OK


def _validate(args) -> int:
    from .schema import read_root, validate

    read_root(_loc(args.dest), _options(args))  # a missing store is bad input (2), not a failed check
    try:
        m = validate(_loc(args.dest), _options(args))
    except StoreError as e:
        _report(str(e))
        return EXIT_MISMATCH
    _report(f"OK: {args.dest} matches schema {m['attributes']['schema_version']} ({len(m['arrays'])} arrays)")
    return EXIT_OK


def _info(args) -> int:
    import json

    from .store_info import format_info, info

    d = info(_loc(args.dest), _options(args))
    _report(json.dumps(d, indent=1) if args.json else format_info(d))
    return EXIT_OK


def _score(args) -> int:
    import json
    import math

    from .read.dataset import open_mouse
    from .read.score import read_predictions, score

    try:
        ds = open_mouse(_loc(args.dest), storage_options=_options(args))
        s = score(ds, read_predictions(args.predictions, ds), tier=args.tier)
    except ValueError as e:  # predictions that do not fit the store; a bad store is handled by main
        if isinstance(e, (SourceError, StoreError)):
            raise
        print(f"sensorium-zarr: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    a = s.attrs
    if args.json:
        _report(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in a.items()}, indent=1))
    elif "n_frames_scored" in a:
        _report(f"{ds.attrs.get('dataset', args.dest)}: tier {a['tier']}, {a['n_trials']} trials, {a['n_neurons']} neurons, "
              f"{a['n_frames_scored']} frames (the first {a['skipped_frames_per_trial']} of each trial skipped)\n"
              f"single-trial correlation  {a['single_trial_correlation']:.4f}")
    else:
        _report(f"{ds.attrs.get('dataset', args.dest)}: tier {a['tier']}, {a['n_trials']} trials, {a['n_neurons']} neurons\n"
              f"single-trial correlation  {a['single_trial_correlation']:.4f}\n"
              f"correlation to average    {a['correlation_to_average']:.4f}\n"
              f"FEVE                      {a['feve']:.4f}  ({a['feve_neurons']} neurons with FEV >= 0.15)")
    return EXIT_OK


def _show(args) -> int:
    from .read.dataset import open_mouse
    from .storage import check_creatable, first_missing

    try:
        from .read.plot import figure_path, overview
    except ImportError as e:
        print(f"sensorium-zarr: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = figure_path(args.out)  # checked before the store is read
    check_creatable(out)
    fig = overview(open_mouse(_loc(args.dest), storage_options=_options(args)))
    made = first_missing(out.parent)  # removed again if drawing fails
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=args.dpi)
    except BaseException:
        out.unlink(missing_ok=True)
        if made is not None:
            import shutil

            shutil.rmtree(made, ignore_errors=True)
        raise
    _report(str(out))
    return EXIT_OK


def _loc(path: str):
    """A command-line location: a URL stays a string, anything else becomes a path."""
    from .storage import location

    return location(path)


def _add_storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                   help="fsspec option for s3:// and other URLs, e.g. endpoint_url=http://... (repeatable); "
                        "by default the AWS environment variables apply")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sensorium-zarr", description="Pack Sensorium 2022 scans into lossless, chunked Zarr v3 stores.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("sample", help="write a synthetic dataset in the real file layout")
    s.add_argument("dest", type=_local_path, help="folder to write the dataset folder (or zip) into")
    s.add_argument("--video", action="store_true", help="a Sensorium 2023 video scan: a NaN-padded clip per trial")
    s.add_argument("--dynamic", action=_Renamed, nargs=0, dest="video", help=argparse.SUPPRESS)  # 0.7's name of --video
    s.add_argument("--trials", type=_at_least(1), default=None, help="default: 200 (100 with --video)")
    s.add_argument("--frames", type=_at_least(1), default=None, help="with --video: frames per padded clip (default: 300)")
    s.add_argument("--neurons", type=_at_least(1), default=150)
    s.add_argument("--competition", choices=["none", "sensorium", "sensorium+"], default="none")
    s.add_argument("--zip", action="store_true", help="write the distributed .zip form")
    s.add_argument("--seed", type=_at_least(0), default=0)
    s.add_argument("--image-dtype", choices=["float32", "uint8"], default="float32")
    s.add_argument("--images", choices=["smooth", "noise"], default="smooth",
                   help="smooth 1/f images (default), or with pixel noise: hard to compress, as the least regular real ones")
    s.add_argument("--overwrite", action="store_true", help="replace a sample of the same name")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_sample)

    c = sub.add_parser("convert", help="convert a dataset folder or .zip into one Zarr store")
    c.add_argument("src", help="dataset folder or the distributed .zip (read in place); may be an s3:// URL")
    c.add_argument("dest", help="store to create")
    c.add_argument("--overwrite", action="store_true", help="replace an existing store at DEST")
    c.add_argument("--workers", type=_at_least(1), default=None, help="parallel writers (default: one per core)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_storage_option(c)
    c.set_defaults(func=_convert)

    ca = sub.add_parser("convert-all", help="convert every dataset folder and zip of SRC_DIR on a dask cluster")
    ca.add_argument("src_dir", help="a local folder or a URL such as s3://bucket/downloads")
    ca.add_argument("dest_dir", help="stores are written to DEST_DIR/<dataset name>.zarr (a folder or a URL)")
    ca.add_argument("--scheduler", default=None, help="address of a running dask scheduler (default: a local cluster)")
    ca.add_argument("--workers", type=_at_least(1), default=None, help="workers of the local cluster (default: one per core)")
    ca.add_argument("--quiet", action="store_true")
    _add_storage_option(ca)
    ca.set_defaults(func=_convert_all)

    v = sub.add_parser("verify", help="compare the store with its source bit for bit (SRC DEST), or with its own checksums (DEST)",
                       usage="%(prog)s [-h] [--workers WORKERS] [--quiet] [--storage-option KEY=VALUE] [SRC] DEST")
    v.add_argument("paths", nargs="+", metavar="PATH", help="[SRC] DEST: the source and the store, or the store alone "
                                                         "(local paths or URLs)")
    v.add_argument("--workers", type=_at_least(1), default=None, help="parallel readers (default: one per core)")
    v.add_argument("--quiet", action="store_true")
    _add_storage_option(v)
    v.set_defaults(func=_verify)

    e = sub.add_parser("export", help="rebuild the original files from a store, byte for byte")
    e.add_argument("dest", help="the store (a path or a URL)")
    e.add_argument("out", type=_local_path, help="folder to write <dataset>/ (or <dataset>.zip) into")
    e.add_argument("--zip", action="store_true", help="write the distributed zip form")
    e.add_argument("--quiet", action="store_true")
    _add_storage_option(e)
    e.set_defaults(func=_export)

    a = sub.add_parser("validate", help="check a store against its schema")
    a.add_argument("dest", help="the store (a path or a URL)")
    _add_storage_option(a)
    a.set_defaults(func=_validate)

    sc = sub.add_parser("score", help="the competition's metrics of a model's predictions on one tier")
    sc.add_argument("dest", help="the store (a path or a URL)")
    sc.add_argument("predictions", help="a Zarr store or NetCDF file with a 'prediction' variable (trial, neuron), "
                                        "or the competition's submission CSV")
    sc.add_argument("--tier", default=None, help="the tier to score (default: test; oracle for a 2023 store)")
    sc.add_argument("--json", action="store_true", help="print as JSON")
    _add_storage_option(sc)
    sc.set_defaults(func=_score)

    sh = sub.add_parser("show", help="one page about a scan: tiers, stimuli, responses, neurons, reliability, behavior")
    sh.add_argument("dest", help="the store (a path or a URL)")
    sh.add_argument("--out", type=_local_path, required=True, help="the figure to write (.png, .pdf or .svg)")
    sh.add_argument("--dpi", type=_at_least(20), default=110)
    _add_storage_option(sh)
    sh.set_defaults(func=_show)

    i = sub.add_parser("info", help="counts per tier, dims, sizes and compression")
    i.add_argument("dest", help="the store (a path or a URL)")
    i.add_argument("--json", action="store_true", help="print as JSON")
    _add_storage_option(i)
    i.set_defaults(func=_info)
    return p


# Clients of object storage whose own exceptions (no credentials, no answer) are not OSErrors.
_REMOTE_CLIENTS = {"botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "google", "adlfs", "azure"}


def _urls(args) -> list[str]:
    """The URLs among the command's locations, to name in a message."""
    found = [getattr(args, n, None) for n in ("src", "dest", "src_dir", "dest_dir")] + list(getattr(args, "paths", None) or [])
    return [str(u) for u in found if isinstance(u, str) and "://" in u]


def _storage_message(e: OSError, args) -> str:
    """One line for an `OSError`: the place (the file, else the command's URLs), then the problem."""
    if isinstance(e, StorageError):
        return str(e)
    place = e.filename or ", ".join(_urls(args))
    return f"{place}: {e.strerror or e}" if place else str(e.strerror or e)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: a command is needed (see {parser.prog} --help)", file=sys.stderr)
        return EXIT_BAD_INPUT
    args = parser.parse_args(argv)
    global _interrupts
    _interrupts = _Interrupts()
    try:
        _refuse_early(args)
        _preload(args.command)
        _startup.end()
        with _interrupts:
            return args.func(args)
    except KeyboardInterrupt:
        resumes = args.command in ("convert", "convert-all") and not _nothing_to_resume(args)
        print("sensorium-zarr: interrupted" + ("; the work done so far is kept: run the same command again to resume"
                                               if resumes else ""), file=sys.stderr)
        _leave(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except BrokenPipeError as e:
        if not isinstance(e, _OutputClosed) and not _stdout_closed():
            print(f"sensorium-zarr: error: {', '.join(_urls(args)) or 'a connection'}: broken pipe", file=sys.stderr)
            return EXIT_STORAGE
        _leave(EXIT_OK)  # the reader of our output (| head) has all it wanted
        return EXIT_OK
    except (SourceError, StoreError) as e:
        print(f"sensorium-zarr: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # the disk or bucket, not the input
        print(f"sensorium-zarr: error: {_storage_message(e, args)}", file=sys.stderr)
        return EXIT_STORAGE
    except Exception as e:
        if type(e).__module__.split(".")[0] not in _REMOTE_CLIENTS:
            raise  # a bug of ours: its traceback is what a report needs
        print(f"sensorium-zarr: error: {', '.join(_urls(args)) or 'object storage'}: {e}", file=sys.stderr)
        return EXIT_STORAGE


# What each command imports before its work begins: imported while a Ctrl-C still ends the process at
# once (`converter._startup`), since nothing is written yet and an interrupt inside an import can
# otherwise be swallowed by the import machinery ("Exception ignored ...").
_COMMAND_MODULES = {
    "sample": (".sample",), "convert": (".write.convert",), "convert-all": (".write.batch",),
    "verify": (".integrity.verify", ".integrity.export"), "export": (".integrity.export",), "validate": (".schema",),
    "info": (".store_info",), "score": (".read.dataset", ".read.score"), "show": (".read.dataset", ".read.plot"),
}


def _refuse_early(args) -> None:
    """Refusals that need none of the command's heavy modules, told before they are imported."""
    if args.command == "convert":
        from .storage import check_store_dest

        check_store_dest(_loc(args.dest), _loc(args.src))


def _preload(command: str) -> None:
    import importlib

    for module in _COMMAND_MODULES.get(command, ()):
        try:
            importlib.import_module(module, __package__)
        except ImportError:
            pass  # an optional package: the command says how to install it


def _nothing_to_resume(args) -> bool:
    """A conversion interrupted before it wrote anything leaves nothing to resume."""
    if args.command != "convert":
        return False
    from .storage import local_path

    dest = local_path(_loc(args.dest))
    return dest is not None and not Path(os.path.abspath(dest) + ".incomplete").exists()


def _stdout_closed() -> bool:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    return False


def _leave(code: int) -> None:
    """End the command-line process now, its cleanup done: no interpreter teardown, whose
    pending event-loop tasks (zarr's, s3fs's) would print pages of warnings after an interrupt.
    A caller that imported `main` into its own process gets the code returned instead."""
    if not _startup.is_command_line():
        return
    try:
        sys.stderr.flush()
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
