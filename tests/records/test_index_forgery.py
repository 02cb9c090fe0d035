"""Forged index files: every entry moved, merged or re-paired (under a recomputed checksum) is an
IndexFileError or CorruptRecordError, never another record's bytes.

The forger here loads the real index, edits its columns and writes it back with
``write_index``, so the file's checksums and its binding to the shard are valid: only the
per-record tags and the flush points' checks stand between ``rf[i]`` and record ``j``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import google_crc32c
import numpy as np
import pytest

from shardforge.records import (
    CorruptRecordError,
    IndexFileError,
    RecordBlock,
    RecordFile,
    TFRecordWriter,
    build_index,
    index_path,
    load_index,
)
from shardforge.records.index import _HEADER, shard_fingerprint, write_index

# equal lengths: every flush block holds the same records at the same relative offsets, so a
# flush point or an entry moved by whole records lands on another record's valid frame
RECORDS = [np.random.default_rng(i).bytes(96) for i in range(200)]
SUFFIXES = [".tfrecord", ".tfrecord.gz", ".tfrecord.zlib"]
K = 53  # the entry a forgery starts at (not a flush block's first record)


def _write(tmp_path, suffix):
    path = str(tmp_path / "train" / f"part-00000-of-00001{suffix}")
    (tmp_path / "train").mkdir(exist_ok=True)
    with TFRecordWriter(path, index=True, flush_every=1024) as w:
        w.write_block(RecordBlock.from_records(RECORDS))
    return path


def _forge(path, edit):
    """Rewrite the index with ``edit(columns)`` applied, checksums recomputed; returns the
    entries the edit changed."""
    idx = load_index(path)
    cols = {f.name: getattr(idx, f.name) for f in dataclasses.fields(idx)
            if getattr(idx, f.name) is not None}
    before = {name: c.copy() for name, c in cols.items()}
    edit(cols)
    write_index(path, type(idx)(**cols))
    n = min(len(c) for c in cols.values())
    return {i for i in range(n) if any(
        i >= len(before[name]) or cols[name][i] != before[name][i] for name in cols)}


def _assert_refused(path, changed):
    """Every read either raises or returns the record asked for; each changed entry raises."""
    try:
        rf = RecordFile(path)
    except IndexFileError:
        return
    refused = set()
    for i in range(len(rf)):
        try:
            got = rf[i]
        except (IndexFileError, CorruptRecordError):
            refused.add(i)
            continue
        assert got == RECORDS[i], f"rf[{i}] returned another record"
    for a in range(0, len(rf), 7):
        try:
            block = rf.read_block(a, a + 13)
        except (IndexFileError, CorruptRecordError):
            continue
        assert list(block) == RECORDS[a : a + len(block)], f"read_block({a}) returned others"
    assert changed and changed <= refused, f"entries {sorted(changed - refused)} were read"


def _merged(cols):
    """Entries K and K+1 made one (its length spans both records), the offsets after it moved
    down by one; the other columns as they were."""
    n = len(cols["offsets"])
    cols["lengths"][K] += cols["lengths"][K + 1] + 16
    for name in cols:
        cols[name] = (np.delete(cols[name], K + 1) if name in ("offsets", "lengths")
                      else cols[name][: n - 1].copy())


def _shifted(cols):
    """Entries K and K+1 merged and every later entry moved down by one row, all its columns
    (its tag and flush point) with it."""
    cols["lengths"][K] += cols["lengths"][K + 1] + 16
    for name in cols:
        if name != "lengths":
            cols[name] = np.delete(cols[name], K + 1)
    cols["lengths"] = np.delete(cols["lengths"], K + 1)


def _swapped_rows(cols):
    for c in cols.values():
        c[[K, K + 1]] = c[[K + 1, K]]


def _swapped_in_place(cols):
    """Two entries of the same length exchange everything but their offsets."""
    for name, c in cols.items():
        if name != "offsets":
            c[[K, K + 1]] = c[[K + 1, K]]


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("edit", [_merged, _shifted, _swapped_rows, _swapped_in_place])
def test_moved_entries_never_name_another_record(tmp_path, suffix, edit):
    path = _write(tmp_path, suffix)
    _assert_refused(path, _forge(path, edit))


def _repair_flush_point(with_check):
    """The records of flush block 2 get block 3's file offset (and with ``with_check`` its
    check too), keeping their own stream offset: the issue's forgery."""

    def edit(cols):
        starts = np.unique(cols["block_offsets"])
        rows = cols["block_offsets"] == starts[2]
        donor = int(np.argmax(cols["block_offsets"] == starts[3]))
        names = ["block_offsets"] + (["block_checks"] if with_check else [])
        for name in names:
            if name in cols:
                cols[name][rows] = cols[name][donor]

    return edit


@pytest.mark.parametrize("suffix", SUFFIXES[1:])
@pytest.mark.parametrize("with_check", [False, True])
def test_a_flush_point_paired_with_another_block_is_refused(tmp_path, suffix, with_check):
    path = _write(tmp_path, suffix)
    assert len(np.unique(load_index(path).block_offsets)) > 10
    _assert_refused(path, _forge(path, _repair_flush_point(with_check)))


@pytest.mark.parametrize("suffix", SUFFIXES[1:])
def test_every_flush_point_moved_on_by_one_block(tmp_path, suffix):
    """Blocks 1..m-2 each given the next block's flush point (file offset and check)."""
    path = _write(tmp_path, suffix)

    def edit(cols):
        starts = np.unique(cols["block_offsets"])
        orig = {name: cols[name].copy() for name in cols}
        for a, b in zip(starts[1:-2], starts[2:-1]):
            rows = orig["block_offsets"] == a
            donor = int(np.argmax(orig["block_offsets"] == b))
            for name in ("block_offsets", "block_checks"):
                if name in cols:
                    cols[name][rows] = orig[name][donor]

    _assert_refused(path, _forge(path, edit))


def _as_format_2(path, edit=lambda cols: None):
    """Rewrite the index as shardforge before format 3 wrote it (no tags, no flush checks), its
    columns changed by ``edit``."""
    idx = load_index(path)
    named = {"offsets": idx.offsets, "lengths": idx.lengths}
    if idx.block_offsets is not None:
        named.update(block_offsets=idx.block_offsets, block_stream_offsets=idx.block_stream_offsets)
    edit(named)
    cols = list(named.values())
    data = b"".join(np.asarray(c, dtype="<i8").tobytes() for c in cols)
    size, checksum = shard_fingerprint(path)
    open(index_path(path), "wb").write(_HEADER.pack(
        b"SFIDX002", len(idx), len(cols), size, idx.stream_size, checksum,
        google_crc32c.value(data)) + data)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_format_2_index_is_refused_until_shardforge_index_rebuilds_it(tmp_path, suffix):
    path = _write(tmp_path, suffix)
    blocks = len(np.unique(load_index(path).block_offsets)) if suffix != ".tfrecord" else 0
    _as_format_2(path)
    with pytest.raises(IndexFileError, match="version 002 is not supported") as err:
        RecordFile(path)
    assert f"shardforge index {path}" in str(err.value)
    subprocess.run([sys.executable, "-m", "shardforge.cli", "index", path], check=True,
                   capture_output=True)
    rf = RecordFile(path)
    assert [rf[i] for i in range(len(rf))] == RECORDS
    if blocks:  # the flush points were kept: seeks still decompress one block
        assert len(np.unique(rf.index.block_offsets)) == blocks


@pytest.mark.parametrize("suffix", SUFFIXES[1:])
def test_rebuilding_never_keeps_a_flush_point_that_names_another_block(tmp_path, suffix):
    path = _write(tmp_path, suffix)
    _as_format_2(path, _repair_flush_point(with_check=False))
    build_index(path)
    rf = RecordFile(path)
    assert [rf[i] for i in range(len(rf))] == RECORDS
    assert (rf.index.block_offsets == 0).all()  # one block: decompress from the start
