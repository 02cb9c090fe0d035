"""TFRecord framing, readers and compression (the writer: :mod:`shardforge.records.writer`).

A record is ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``,
little-endian, exactly as TensorFlow writes it. Files may be GZIP or ZLIB compressed as a whole.

Compressed files written here are single, standard GZIP/ZLIB streams with a *full flush* (a
byte-aligned point where the compressor forgets its history) every ``FLUSH_EVERY`` bytes of
uncompressed data, always between records. Every reader reads them as usual; ours can also start
decompressing at any flush point, which is what makes index-based random access into a
compressed shard cost one block instead of the whole file (see :mod:`shardforge.records.index`).
"""

from __future__ import annotations

import glob as _glob
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Union

import google_crc32c
import numpy as np

from shardforge.records import _kernels as K
from shardforge.records import fs
from shardforge.records.errors import CorruptRecordError, ReadReport

log = logging.getLogger("shardforge.records")

PathLike = Union[str, os.PathLike]  # noqa: UP007
Paths = Union[PathLike, Iterable[PathLike]]  # noqa: UP007

FLUSH_EVERY = 64 << 10  # uncompressed bytes between full flushes: the cost of one random seek
CHUNK = 8 << 20  # bytes read (or decompressed) at a time
_SCAN_BATCH = 65536  # records framed per compiled call
_WBITS = {"gzip": 31, "zlib": 15}
_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".zz": "zlib", ".zlib": "zlib"}


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C rotated right by 15 bits plus 0xa282ead8."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + K.MASK_DELTA) & K.MASK32


def resolve_compression(path: PathLike, compression: str | None = "auto") -> str | None:
    """``None``, ``"gzip"`` or ``"zlib"``; ``"auto"`` decides from the suffix (.gz, .zz, .zlib)."""
    if compression is None:
        return None
    c = compression.lower()
    if c == "auto":
        return _SUFFIXES.get(Path(path).suffix.lower())
    if c in ("", "none"):
        return None
    if c in _WBITS:
        return c
    raise ValueError(f"compression must be None, 'gzip', 'zlib' or 'auto', not {compression!r}")


def data_crcs(buf: np.ndarray, data_ends: np.ndarray) -> np.ndarray:
    """The masked data CRCs (int64) stored in the frames whose data ends at ``data_ends`` in
    ``buf`` (each record's footer)."""
    at = np.asarray(data_ends, dtype=np.int64)[:, None] + np.arange(4)
    return buf[at].view("<u4").ravel().astype(np.int64)


def frame(data: bytes) -> bytes:
    """One record's bytes on disk."""
    header = struct.pack("<Q", len(data))
    return b"".join((
        header, struct.pack("<I", masked_crc32c(header)), data,
        struct.pack("<I", masked_crc32c(data)),
    ))


def frame_block(block: RecordBlock, compression: str | None = None) -> np.ndarray | bytes:
    """The TFRecord bytes of every record of ``block`` (length, masked CRC-32C of the length,
    data, masked CRC-32C of the data), framed by compiled code: a ``uint8`` array, or with
    ``compression="gzip"``/``"zlib"`` the ``bytes`` of one complete compressed stream.

    >>> block = RecordBlock.from_records([b"a", b"bc"])
    >>> frame_block(block).tobytes() == frame(b"a") + frame(b"bc")
    True
    """
    buf, offsets, lengths = block.checked()
    out = np.empty(int(lengths.sum()) + (K.HEADER + K.FOOTER) * len(lengths), dtype=np.uint8)
    K.frame_block(buf, offsets, lengths, K.CRC_TABLES, K.CRC_FN, out)
    comp = resolve_compression("", compression)
    if comp is None:
        return out
    z = zlib.compressobj(6, zlib.DEFLATED, _WBITS[comp])
    return z.compress(out) + z.flush()


_SHARD_RE = re.compile(r"\.(tfrecord|tfrecords|rec)(\.gz|\.gzip|\.zz|\.zlib)?$")


def list_shards(dir_or_glob: PathLike) -> list[str]:
    """Sorted shard files of a directory (``*.tfrecord[.gz|.zz|.zlib]``) or a glob; never index or
    temporary files (nor an index beside its shard, where shardforge before index format 2 put
    it)."""
    p = os.fspath(dir_or_glob)
    if fs.is_remote(p):
        from shardforge.records.manifest import listed_shards

        listed = None if _glob.has_magic(p) else listed_shards(p)
        if listed is not None:
            return listed
        if _glob.has_magic(p):
            paths = [q for q in _remote_glob(p) if fs.isfile(q)]
        else:  # one listing says which are files: no request per shard
            paths = [fs.join(p, n) for n in fs.files(p) if _SHARD_RE.search(n)]
            paths = paths or [q for q in [p] if fs.isfile(q)]
        return sorted(q for q in paths if _SHARD_RE.search(q) and ".tmp-" not in q
                      and not fs.basename(q).startswith("."))
    if os.path.isdir(p):
        paths = [str(q) for q in Path(p).iterdir() if _SHARD_RE.search(q.name)]
    else:
        paths = _glob.glob(p) if _glob.has_magic(p) else [p]
        paths = [q for q in paths if not q.endswith(".idx") and ".tmp-" not in q]
    return sorted(q for q in paths if os.path.isfile(q) and not os.path.basename(q).startswith("."))


def _remote_glob(pattern: str) -> list[str]:
    """The URLs matching a glob in a bucket."""
    scheme = pattern.split("://", 1)[0]
    return sorted(f"{scheme}://{m}" for m in fs.filesystem(pattern).glob(pattern))


def expand_paths(paths: Paths) -> list[str]:
    """Files, directories (their shards) and globs, or a list of them, to existing files."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if fs.isdir(p):
            out += list_shards(p)
        elif _glob.has_magic(p):
            # a glob means the shards: never their index files
            found = _remote_glob(p) if fs.is_remote(p) else _glob.glob(p)
            matches = sorted(m for m in found if not m.endswith(".idx"))
            if not matches:
                raise FileNotFoundError(f"no files match {p!r}")
            out += matches
        else:
            if not fs.exists(p):
                raise FileNotFoundError(p)
            out.append(p)
    return out


class RecordBlock(Sequence):
    """Records as spans of one ``uint8`` buffer: no Python object per record until you index it.

    ``decode_batch`` takes a block directly; ``block[i]`` is the ``bytes`` of record ``i``.
    """

    __slots__ = ("buf", "offsets", "lengths")

    def __init__(self, buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> None:
        self.buf, self.offsets, self.lengths = buf, offsets, lengths

    @classmethod
    def from_records(cls, records: Sequence[bytes]) -> RecordBlock:
        lengths = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
        offsets = np.zeros(len(records), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        buf = np.frombuffer(b"".join(records), dtype=np.uint8)
        return cls(buf, offsets, lengths)

    def checked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(buf, offsets, lengths)`` as contiguous ``uint8``/``int64`` arrays, every span
        checked to lie inside ``buf``: what compiled code may follow (ValueError naming the first
        record that does not)."""
        buf = self.buf
        if not isinstance(buf, np.ndarray) or buf.dtype != np.uint8 or buf.ndim != 1:
            raise TypeError("RecordBlock.buf must be a 1-D uint8 numpy array")
        offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        lengths = np.ascontiguousarray(self.lengths, dtype=np.int64)
        if offsets.shape != lengths.shape or offsets.ndim != 1:
            raise ValueError(f"RecordBlock has {offsets.shape} offsets but {lengths.shape} lengths")
        # lengths > len - offsets, not offsets + lengths > len: the sum of two lies can wrap
        bad = (offsets < 0) | (lengths < 0) | (lengths > len(buf) - offsets)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"RecordBlock record {i}: offset {int(offsets[i])} and length {int(lengths[i])} "
                f"do not lie inside its {len(buf)}-byte buffer"
            )
        return np.ascontiguousarray(buf), offsets, lengths

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return RecordBlock(self.buf, self.offsets[i], self.lengths[i])
        o = int(self.offsets[i])
        return self.buf[o : o + int(self.lengths[i])].tobytes()

    def __iter__(self) -> Iterator[bytes]:
        data = self.buf.tobytes() if len(self.offsets) > 64 else None
        for o, n in zip(self.offsets.tolist(), self.lengths.tolist()):
            yield data[o : o + n] if data is not None else self.buf[o : o + n].tobytes()


class _StreamError(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _refills(path: str, compression: str | None) -> Iterator[np.ndarray]:
    """``send(tail)`` the unconsumed end of the buffer, get ``tail + the next bytes`` of the
    (decompressed) file back; the first value needs ``send(None)``, StopIteration at the end.
    Raises _StreamError on a bad compressed stream."""
    tail = np.zeros(0, dtype=np.uint8)
    if compression is None:  # read straight into the new buffer: one copy per byte
        with fs.open_read(path) as f:
            while True:
                buf = np.empty(len(tail) + CHUNK, dtype=np.uint8)
                buf[: len(tail)] = tail
                n = f.readinto(memoryview(buf)[len(tail) :])
                if not n:
                    return
                tail = yield buf[: len(tail) + n]
    for chunk in _decompressed_chunks(path, compression):
        tail = yield np.concatenate((tail, np.frombuffer(chunk, dtype=np.uint8)))


def _decompressed_chunks(path: str, compression: str) -> Iterator[bytes]:
    with fs.open_read(path) as f:
        wbits = _WBITS[compression]
        d = zlib.decompressobj(wbits)
        consumed = 0
        pending = b""
        while True:
            data = pending or f.read(CHUNK)
            pending = b""
            if not data:
                break
            try:
                out = d.decompress(data, CHUNK)
                while out:
                    yield out
                    out = d.decompress(d.unconsumed_tail, CHUNK) if d.unconsumed_tail else b""
            except zlib.error as err:
                raise _StreamError(
                    f"{compression} stream is corrupt near compressed byte {consumed}: {err}"
                ) from None
            if d.eof:  # concatenated members/streams: start the next one on what is left
                consumed += len(data) - len(d.unused_data)
                pending = d.unused_data
                if not pending:
                    pending = f.read(CHUNK)
                    if not pending:
                        return
                d = zlib.decompressobj(wbits)
            else:
                consumed += len(data)
        if not d.eof:
            raise _StreamError(f"{compression} stream ends early (file truncated?)")


def iter_blocks(
    path: PathLike, *, verify: bool = True, on_corrupt: str = "raise",
    compression: str | None = "auto", report: ReadReport | None = None,
) -> Iterator[tuple[int, np.ndarray, RecordBlock]]:
    """Frame one file: yields ``(first record index, stream offsets of the records, block)``.

    Offsets are those of the record headers in the (decompressed) stream, i.e. the index's.
    """
    if on_corrupt not in ("raise", "skip"):
        raise ValueError(f"on_corrupt must be 'raise' or 'skip', not {on_corrupt!r}")
    path = os.fspath(path)
    report = report if report is not None else ReadReport()
    comp = resolve_compression(path, compression)
    off = np.empty(_SCAN_BATCH, dtype=np.int64)
    lens = np.empty(_SCAN_BATCH, dtype=np.int64)
    t = K.CRC_TABLES
    buf = np.empty(0, dtype=np.uint8)
    base = 0  # stream offset of buf[0]
    pos = 0
    index = 0
    resyncing = False

    def problem(offset: int, reason: str) -> None:
        err = CorruptRecordError(path, index, offset, reason)
        if on_corrupt == "raise":
            raise err
        log.warning("skipping corrupt data: %s", err)
        report.problems.append(err)

    refills = _refills(path, comp)
    first = True
    while True:
        try:
            buf, base, pos = refills.send(None if first else buf[pos:]), base + pos, 0
        except StopIteration:
            break
        except _StreamError as err:
            problem(base + len(buf), err.reason)
            return
        first = False
        while True:
            if resyncing:
                p = K.resync(buf, pos, t, K.CRC_FN)
                if p < 0:
                    pos = max(pos, len(buf) - K.HEADER + 1)
                    break
                pos, resyncing = p, False
            n, pos, status = K.scan(buf, pos, verify, t, K.CRC_FN, off, lens)
            if n:
                block = RecordBlock(buf, off[:n].copy(), lens[:n].copy())
                yield index, block.offsets - K.HEADER + base, block
                index += n
                report.records += n
            if status == K.SCAN_MORE:
                break
            if status == K.SCAN_BAD_LENGTH:
                problem(base + pos, "length checksum mismatch" + (
                    "; skipped to the next valid record header" if on_corrupt == "skip" else ""
                ))
                index += 1
                resyncing = True
                pos += 1
            elif status == K.SCAN_BAD_DATA:
                problem(base + pos, "data checksum mismatch")
                index += 1
                pos += K.HEADER + int(K._length(buf, pos)) + K.FOOTER
    left = len(buf) - pos
    if resyncing or left == 0:
        return
    if left < K.HEADER:
        problem(base + pos, f"truncated record: only {left} of 12 header bytes before end of file")
    else:
        length = int(K._length(buf, pos))
        problem(base + pos, (
            f"truncated record: the header says {length} data bytes (+4 checksum) but only "
            f"{left - K.HEADER} bytes follow before the end of the file"
        ))


class RecordReader(Iterator[bytes]):
    """Iterator over the records of several files; ``.report`` says what was read and skipped."""

    def __init__(self, paths: Paths, **kwargs) -> None:
        self.paths = expand_paths(paths)
        self.report = ReadReport()
        self._it = self._records(kwargs)

    def _records(self, kwargs) -> Iterator[bytes]:
        for path in self.paths:
            for _, _, block in iter_blocks(path, report=self.report, **kwargs):
                yield from block

    def __next__(self) -> bytes:
        return next(self._it)

    def __iter__(self) -> RecordReader:
        return self


def read_records(
    paths_or_glob: Paths, *, verify: bool = True, on_corrupt: str = "raise",
    compression: str | None = "auto",
) -> RecordReader:
    """Iterate the records of a file, a glob, or a list of them, checking CRCs by default.

    With ``on_corrupt="skip"`` corrupt records are logged (logger ``shardforge.records``) and
    listed in ``reader.report`` (count and offsets) instead of raising:

    >>> reader = read_records("shards/*.tfrecord.gz", on_corrupt="skip")
    >>> n = sum(1 for _ in reader); print(reader.report.skipped)
    """
    return RecordReader(
        paths_or_glob, verify=verify, on_corrupt=on_corrupt, compression=compression
    )


def read_blocks(
    paths_or_glob: Paths, *, verify: bool = True, on_corrupt: str = "raise",
    compression: str | None = "auto", report: ReadReport | None = None,
) -> Iterator[RecordBlock]:
    """Like :func:`read_records` but yields :class:`RecordBlock` s (up to 65536 records each), the
    fast path into :func:`decode_batch`."""
    for path in expand_paths(paths_or_glob):
        for _, _, block in iter_blocks(
            path, verify=verify, on_corrupt=on_corrupt, compression=compression, report=report
        ):
            yield block
