"""moto's S3 server on loopback: a real S3 API for the benchmarks and the tests.

``python -m moto.server`` serves every AWS service. Before each request it finds the service:
it lists moto's package folder twice and tries its URL patterns, under one lock, then logs the
request, which makes a request cost about 1.6 times as much. The server here runs the S3 application of
moto's, in its own process, without that lookup and without the access log: about 400 small
GETs a second against 240 (`python benchmarks/moto.py` measures both).
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


def _requests_per_second(s3_only: bool, n: int = 500) -> float:
    import os

    import s3fs

    with moto_server(s3_only=s3_only) as endpoint:
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing", skip_instance_cache=True)
        fs.mkdir("data")
        fs.pipe({f"data/o/{i}": os.urandom(1000) for i in range(n)})
        t = time.perf_counter()
        fs.cat([f"data/o/{i}" for i in range(n)])
        return n / (time.perf_counter() - t)


if __name__ == "__main__":
    for s3_only in (False, True):
        name = "moto's S3 application alone" if s3_only else "python -m moto.server"
        print(f"{name}: {_requests_per_second(s3_only):.0f} GETs/s of 1 kB, 500 at once")
