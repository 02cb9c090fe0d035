"""Object-store emulators for the remote tests, started as subprocesses on 127.0.0.1 (offline).

``gcs``: gcp-storage-emulator (``tests/remote/gcs_emulator.py``), ``STORAGE_EMULATOR_HOST``
pointing at it. ``s3``: moto's server, ``AWS_ENDPOINT_URL`` pointing at it. Each yields a
:class:`Store` with a fresh bucket per test; ``faulty`` puts :class:`FaultProxy` in front of an
emulator to drop connections and answer 503 in the middle of reads.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start on port {port}")


@contextlib.contextmanager
def _server(argv: list[str], port: int, what: str):
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait(port, proc, what)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


@dataclass
class Store:
    """One emulated object store: ``url(path)`` is ``scheme://bucket/path``; ``env`` is what a
    subprocess needs to reach it."""

    scheme: str
    bucket: str
    endpoint: str
    env: dict

    def url(self, path: str = "") -> str:
        return f"{self.scheme}://{self.bucket}/{path}".rstrip("/")


@pytest.fixture(scope="session")
def gcs_endpoint():
    port = free_port()
    with _server([sys.executable, os.path.join(HERE, "gcs_emulator.py"), str(port)], port,
                 "gcp-storage-emulator") as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3_endpoint():
    port = free_port()
    with _server([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                 port, "moto_server") as endpoint:
        yield endpoint


def _gcs_env(endpoint: str) -> dict:
    return {"STORAGE_EMULATOR_HOST": endpoint, "GOOGLE_CLOUD_PROJECT": "test"}


def _s3_env(endpoint: str) -> dict:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _make_bucket(scheme: str, endpoint: str, name: str) -> None:
    if scheme == "gs":
        req = urllib.request.Request(f"{endpoint}/storage/v1/b?project=test", method="POST",
                                     data=f'{{"name": "{name}"}}'.encode(),
                                     headers={"Content-Type": "application/json"})
    else:
        req = urllib.request.Request(f"{endpoint}/{name}", method="PUT")
    urllib.request.urlopen(req, timeout=10).close()


@contextlib.contextmanager
def _store(scheme: str, endpoint: str, monkeypatch):
    from shardforge.records import fs

    env = _gcs_env(endpoint) if scheme == "gs" else _s3_env(endpoint)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    fs._FILESYSTEMS.clear()  # clients read the endpoint when made
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    _make_bucket(scheme, endpoint, bucket)
    try:
        yield Store(scheme, bucket, endpoint, env)
    finally:
        fs._FILESYSTEMS.clear()


@pytest.fixture
def gcs(gcs_endpoint, monkeypatch):
    with _store("gs", gcs_endpoint, monkeypatch) as store:
        yield store


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    with _store("s3", s3_endpoint, monkeypatch) as store:
        yield store


@pytest.fixture(params=["gs", "s3"])
def store(request):
    """Each test that takes ``store`` runs once against each emulator."""
    return request.getfixturevalue("gcs" if request.param == "gs" else "s3")


class FaultProxy:
    """A threaded HTTP proxy in front of an emulator that breaks reads: every ``every``-th
    ranged GET is answered 503 or has its connection dropped halfway through the body
    (alternately; ``every=0``: never). ``faults`` counts what it did; ``requests`` and
    ``bytes`` count every request and the response bytes it passed on (what a store bills);
    ``latency`` seconds are added before each answer (a real store's time to first byte)."""

    def __init__(self, upstream: str, every: int = 3, latency: float = 0.0) -> None:
        self.upstream = upstream.split("://", 1)[1]
        self.every, self.seen, self.faults, self.latency = every, 0, 0, latency
        self.requests = self.bytes = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = None
                with proxy.lock:
                    proxy.requests += 1
                time.sleep(proxy.latency)
                if self.command == "GET" and "range" in {k.lower() for k in self.headers}:
                    with proxy.lock:
                        proxy.seen += 1
                        if proxy.every and proxy.seen % proxy.every == 0:
                            proxy.faults += 1
                            fault = "503" if proxy.faults % 2 else "drop"
                if fault == "503":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = proxy.upstream
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                head = self.command == "HEAD"  # its Content-Length is the object's, no body
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection") and (
                            head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "drop":  # half the body, then the connection is gone
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                with proxy.lock:
                    proxy.bytes += len(data)
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def faulty(store, monkeypatch):
    """``store`` reached through a :class:`FaultProxy` (same bucket, same data)."""
    from shardforge.records import fs

    proxy = FaultProxy(store.endpoint)
    key = "STORAGE_EMULATOR_HOST" if store.scheme == "gs" else "AWS_ENDPOINT_URL"

    @contextlib.contextmanager
    def through():
        monkeypatch.setenv(key, proxy.endpoint)
        fs._FILESYSTEMS.clear()
        try:
            yield proxy
        finally:
            monkeypatch.setenv(key, store.endpoint)
            fs._FILESYSTEMS.clear()

    yield through
    proxy.close()
