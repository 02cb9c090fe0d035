"""records/fs.py against the GCS and S3 emulators: what the commit and the readers rely on."""

import pytest

from shardforge.records import fs


def test_write_read_range_size_delete(store):
    url = store.url("out/a.bin")
    data = bytes(range(256)) * 40
    fs.write_bytes(url, data)
    assert fs.size(url) == len(data)
    assert fs.read_bytes(url) == data
    assert fs.read_range(url, 100, 5000) == data[100:5000]
    assert fs.read_range(url, len(data) - 3, len(data) + 100) == data[-3:]
    with fs.open_read(url) as f:
        assert f.read() == data
    assert fs.listdir(store.url("out")) == ["a.bin"]
    assert fs.walk(store.url("")) == ["out/a.bin"]
    fs.delete(url)
    assert not fs.exists(url)
    fs.delete(url)  # already gone: nothing


def test_create_precondition(store):
    """Two writers creating one object: the second is refused (the commit relies on it)."""
    url = store.url("out/manifest.json")
    fs.write_bytes(url, b"first", if_absent=True)
    with pytest.raises(FileExistsError):
        fs.write_bytes(url, b"second", if_absent=True)
    assert fs.read_bytes(url) == b"first"


def test_ranged_reads_survive_faults(store, faulty):
    url = store.url("blob")
    data = bytes(range(256)) * 4096
    fs.write_bytes(url, data)
    with faulty() as proxy:
        got = [fs.read_range(url, a, a + 65536) for a in range(0, len(data), 65536)]
    assert b"".join(got) == data
    assert proxy.faults >= 3
