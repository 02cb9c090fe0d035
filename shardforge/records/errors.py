"""Errors that name what a user can act on, and the report of records skipped while reading."""

from __future__ import annotations

from dataclasses import dataclass, field


class CorruptRecordError(ValueError):
    """A TFRecord file is damaged: names the file, the record's index and its byte offset.

    For a compressed file the offset is in the decompressed stream (the same numbers the index
    file uses).
    """

    def __init__(self, file: str, index: int, offset: int, reason: str) -> None:
        self.file, self.index, self.offset, self.reason = str(file), index, offset, reason
        super().__init__(f"{self.file}: record {index} at byte offset {offset}: {reason}")

    def __reduce__(self):
        return type(self), (self.file, self.index, self.offset, self.reason)


class IndexFileError(ValueError):
    """An index file cannot be used for its shard: names both files and what is wrong.

    Raised on load, before any offset in it is followed: a damaged, truncated, stale (the shard
    changed since) or inconsistent index, or one of a format version this shardforge does not read.
    """

    def __init__(self, index_file: str, shard: str, reason: str) -> None:
        self.index_file, self.shard, self.reason = str(index_file), str(shard), reason
        super().__init__(
            f"{self.index_file} (index of {self.shard}): {reason}; rebuild it: "
            f"shardforge index {self.shard}"
        )

    def __reduce__(self):
        return type(self), (self.index_file, self.shard, self.reason)


class ExampleDecodeError(ValueError):
    """A serialized tf.Example does not match the parse spec (or is not a tf.Example at all).

    ``feature`` is None when the record itself is malformed. ``index`` is the record's position
    in the batch that was decoded, or, once a reader knows where the batch came from
    (:meth:`at`), its index in ``file``.
    """

    def __init__(self, feature: str | None, index: int, expected: str, actual: str,
                 file: str | None = None) -> None:
        self.feature, self.index, self.expected, self.actual = feature, index, expected, actual
        self.file = file
        where = f"record {index}" if feature is None else f"feature {feature!r} of record {index}"
        if file is not None:
            where = f"{file}: {where}"
        super().__init__(f"{where}: expected {expected}, got {actual}")

    def at(self, file: str, index: int) -> ExampleDecodeError:
        """The same error, placed at record ``index`` of ``file``."""
        return type(self)(self.feature, index, self.expected, self.actual, str(file))

    def __reduce__(self):
        return type(self), (self.feature, self.index, self.expected, self.actual, self.file)


@dataclass
class ReadReport:
    """What a reader saw: records returned and corrupt records skipped (``on_corrupt="skip"``).

    ``skipped`` counts corrupt spots: one bad record, one unreadable stretch up to the next valid
    record header, or one truncated / undecompressable tail.
    """

    records: int = 0
    problems: list[CorruptRecordError] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.problems)

    @property
    def skipped_offsets(self) -> list[tuple[str, int]]:
        return [(p.file, p.offset) for p in self.problems]

    def __str__(self) -> str:
        lines = [f"{self.records} records read, {self.skipped} corrupt skipped"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)
