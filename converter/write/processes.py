"""Blocks of trials on worker processes: one conversion on every core.

The threads of one process share one interpreter lock, which a block's Python work (a system
call or two per source file, a header check, its bookkeeping) holds most of the time: on 2
cores, two threads write a full-size mouse's blocks 1.2-1.5x as fast as one, two processes
1.8x (docs/performance.md).  The workers are fresh interpreters running this module, not
forks: a fork of a process that runs threads (zarr-python's event loop, the caller's own) can
deadlock, and `multiprocessing`'s other ways of starting import the caller's main script again.
Each imports what a block needs (numpy, numcodecs; not xarray or zarr-python) in 0.15-0.3 s,
while the caller writes the store's skeleton.

Tasks go to a worker pickled on its stdin (the task once, then only the items to run it on);
its steps, results and errors come back pickled on its stdout, read by one thread per worker.  Workers run in a session of their own, so a Ctrl-C
at the terminal reaches only the caller, which stops them: each stops at its next step, as a
thread would.  A worker whose caller has gone stops there too, or at once when idle.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

STOP_SECONDS = 30  # the longest `close` waits for a stopped worker before killing it


# glibc's malloc, left to itself, hands the memory a block is encoded in back to the system and
# takes it again, faulting every page in anew: for a quarter-size 2023 mouse on 2 workers, 1.2
# million page faults and 40% of the conversion's system time (docs/performance.md).  The workers
# keep it instead (their memory stays at its peak, which one block sets).  A value the user set is
# kept; other C libraries ignore these.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
# zarr-python, where a worker uses it (`converter.verify` reads each block through it), decodes the
# chunks of one read in batches rather than one at a time: a block's 1024 inner chunks of a shard
# take about half the CPU time, and verify of a full-size mouse 4.5-5.6 -> 4.3-4.5 s (docs/performance.md).
ZARR = {"ZARR_CODEC_PIPELINE__BATCH_SIZE": "64"}
# No worker multiplies matrices, but numpy's OpenBLAS starts a thread per core in each one, and they
# spin at its start: ~50 ms of CPU a worker here, and a core's worth of threads in each of 16
# workers on a 16-core machine. One, as dask's own workers have it.
THREADS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
WORKER_ENVIRON = {**MALLOC, **ZARR, **THREADS}


def worker_environ() -> dict[str, str]:
    """The `WORKER_ENVIRON` variables a worker process starts with (a value the user set wins)."""
    return {k: os.environ.get(k, v) for k, v in WORKER_ENVIRON.items()}


class _Stopped(Exception):
    """Raised at a worker's next step once it has been told to stop (or its caller has gone)."""


class Workers:
    """``n`` worker processes, started at once; an `Executor` (`converter.write.executors`)
    while open.  Use as a context manager: leaving it stops and reaps every worker."""

    def __init__(self, n: int, threads: int = 1) -> None:
        # The worker imports this package as the command-line script would: not from its working folder
        # (a folder named `converter` there is not ours), and from where this copy lives only when it is
        # found nowhere else, appended, so that nothing there can stand in for a module of the standard library.
        boot = (f"import sys; del sys.path[0]; sys.path.append({str(Path(__file__).resolve().parents[2])!r}); "
                f"from {__name__} import main; main()")
        self._messages: queue.Queue = queue.Queue()
        self._tasks: dict[int, Callable] = {}  # the task each worker holds
        self._procs: list[subprocess.Popen] = []
        self._readers: list[threading.Thread] = []
        try:
            for k in range(n):
                proc = subprocess.Popen([sys.executable, "-c", boot, str(threads)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, start_new_session=True, env={**os.environ, **worker_environ()})
                self._procs.append(proc)
                reader = threading.Thread(target=self._read, args=(k, proc), daemon=True, name=f"sensorium-zarr-worker-{k}")
                reader.start()
                self._readers.append(reader)
        except BaseException:
            self.close()
            raise

    def _read(self, k: int, proc: subprocess.Popen) -> None:
        with contextlib.suppress(EOFError, OSError, pickle.UnpicklingError):
            while True:
                self._messages.put((k, pickle.load(proc.stdout)))
        self._messages.put((k, ("exit", proc.wait())))

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, task: Callable, items: Sequence, progress: Callable[[int], None] | None = None) -> Iterator:
        """Each item's ``task(item, step)`` on the workers; results as they finish, in any order.
        The first items are handed out before this returns, as `converter.write.executors.started_now` says.
        Each worker holds one copy of the task for the call, whose memory its items reuse (`reusing`)."""
        from ..source.arrays import reusing

        results = self._results(reusing(task), items, progress)
        next(results)
        return results

    def _results(self, task: Callable, items: Sequence, progress: Callable[[int], None] | None) -> Iterator:
        todo, busy = deque(items), {}
        try:
            for k in range(len(self._procs)):
                if todo:
                    busy[k] = self._send(k, task, todo.popleft())
            yield None  # handed out (`converter.write.executors.started_now`)
            while busy:
                k, (kind, value) = self._messages.get()
                if kind == "step":
                    if progress is not None:
                        progress(value)
                elif kind == "done":
                    del busy[k]
                    if todo:
                        busy[k] = self._send(k, task, todo.popleft())
                    yield value
                elif kind == "error":
                    raise value
                elif k in busy:  # the worker ended with an item in hand: killed (out of memory?) or crashed
                    how = f"killed by signal {-value}" if value < 0 else f"exit code {value}"
                    item = busy[k]
                    what = f"trials {item.start}-{item.stop - 1}" if isinstance(item, range) else str(item)
                    raise ChildProcessError(f"a worker process ended unexpectedly ({how}) on {what}; run the same command "
                                            "again (a conversion resumes from the work done so far)")
        finally:
            if busy:
                self.close()  # items still running stop at their next step; those queued never start

    def _send(self, k: int, task: Callable, item):
        """``item`` to worker ``k``, with ``task`` unless it has it already: a task unpickles its
        source anew (a zip: its directory of ~28,000 entries), once per worker, not per item."""
        stdin = self._procs[k].stdin
        try:
            pickle.dump((None if self._tasks.get(k) is task else task, item), stdin, protocol=pickle.HIGHEST_PROTOCOL)
            stdin.flush()
            self._tasks[k] = task
        except OSError:  # it has ended: its reader reports how
            pass
        return item

    def close(self) -> None:
        """Stop every worker (each at its next step) and wait until it has ended."""
        for proc in self._procs:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # an idle worker ends at once
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for reader in self._readers:
            reader.join()
        for proc in self._procs:
            proc.stdout.close()
        self._procs, self._readers = [], []


def serve(threads: int) -> None:
    """A worker's life: run each task read from stdin; send its steps, then its result or error."""
    from numcodecs import blosc

    from ..zarrlite.pool import set_threads

    set_threads(threads)
    # Blosc called on a main thread compresses on threads of its own, which store a frame's blocks in
    # the order they finish: the same values, other bytes.  Off here (our own process), each chunk's
    # bytes are those a thread of the caller's process writes.
    blosc.use_threads = False
    tasks = sys.stdin.buffer
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # whatever else prints goes to stderr, not into the pipe
    sys.stdout = sys.stderr
    caller, stopping = os.getppid(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    def send(message) -> None:
        pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    def step(n: int) -> None:
        if stopping.is_set() or os.getppid() != caller:
            raise _Stopped
        send(("step", n))

    task = None
    while not stopping.is_set():
        try:
            sent, block = pickle.load(tasks)
        except EOFError:
            return
        task = sent if sent is not None else task
        try:
            send(("done", task(block, step)))
        except _Stopped:
            return
        except Exception as e:
            if not _picklable(e):
                e = RuntimeError(f"{type(e).__name__}: {e}")
            e.add_note("".join(["in a worker process of the conversion:\n", *traceback.format_exception(e)]))
            send(("error", e))


def _picklable(e: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(e))
        return True
    except Exception:
        return False


def main() -> None:
    """A worker process's entry: ``serve`` with the threads its command line gives."""
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):  # the caller has gone
        serve(int(sys.argv[1]))
