"""Whole files in and out of any filesystem a job writes to: local paths through
``records.layout.atomic_write``, URLs (``gs://``, ``s3://``) through Beam's ``FileSystems``,
imported only when a URL is given (object stores have no rename: a create is all or nothing)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from shardforge.records.layout import atomic_write


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL (``gs://``, ``s3://``) rather than a local path."""
    return "://" in path


def write_file(path: str, data: bytes | Iterable[bytes]) -> None:
    """Write a whole file (``bytes``, or buffers written one after the other), creating its
    directory."""
    if not is_remote(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        atomic_write(path, data)
        return
    from apache_beam.io.filesystems import FileSystems

    parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    with FileSystems.create(path) as f:
        for part in parts:
            f.write(part)


def read_file(path: str) -> bytes:
    """A whole file's bytes."""
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
        return f.read()
