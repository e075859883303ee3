"""moto's S3 server on loopback: a real S3 API for the benchmarks and the tests.

``python -m moto.server`` serves every AWS service. Before each request it finds the service:
it lists moto's package folder twice and tries its URL patterns, under one lock, then logs the
request, which makes a request cost about 1.6 times as much. The server here runs the S3 application of
moto's, in its own process, without that lookup and without the access log: about 690 GETs a
second of 31 kB objects against 430 on one 2-core machine, 375 against 197 on another
(`python benchmarks/moto.py` measures both). Either way moto
answers a range by reading and copying the whole object, so ranges of a large object cost more.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

# The child imports moto and werkzeug only; it needs nothing from this repository.
_SERVE = """
import logging, sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import create_backend_app
logging.getLogger("werkzeug").setLevel(logging.ERROR)
run_simple(sys.argv[1], int(sys.argv[2]), create_backend_app("s3"), threaded=True)
"""


@contextlib.contextmanager
def moto_server(timeout: float = 30, s3_only: bool = True) -> Iterator[str]:
    """Run moto's S3 server on a free loopback port; yields its endpoint URL.

    ``s3_only=False`` runs ``python -m moto.server`` itself (every service, one lookup per request).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve = ["-c", _SERVE, "127.0.0.1", str(port)] if s3_only else ["-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen([sys.executable, *serve], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"moto's S3 server exited with {proc.returncode} before it answered") from None
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=timeout)


def _gets_per_second(s3_only: bool, n: int = 500, size: int = 31_000) -> tuple[float, float]:
    """Concurrent GETs a second: of ``n`` objects of ``size`` bytes, and of ``n`` ranges of that size
    from one 30 MB object (moto reads and copies a whole object to answer a range of it)."""
    import os

    import s3fs

    with moto_server(s3_only=s3_only) as endpoint:
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing", skip_instance_cache=True)
        fs.mkdir("data")
        fs.pipe({f"data/o/{i}": os.urandom(size) for i in range(n)} | {"data/big": os.urandom(30_000_000)})
        rates = []
        for paths, starts in ([f"data/o/{i}" for i in range(n)], [0] * n), (["data/big"] * n, [i * size for i in range(n)]):
            t = time.perf_counter()
            fs.cat_ranges(paths, starts, [s + size for s in starts])
            rates.append(n / (time.perf_counter() - t))
        return rates[0], rates[1]


if __name__ == "__main__":
    for s3_only in (False, True):
        name = "moto's S3 application alone" if s3_only else "python -m moto.server"
        whole, ranged = _gets_per_second(s3_only)
        print(f"{name}: {whole:.0f} GETs/s of 31 kB objects, {ranged:.0f} GETs/s of 31 kB ranges of a 30 MB object (500 at once)")
