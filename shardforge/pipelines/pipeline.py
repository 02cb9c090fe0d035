"""``run_pipeline``: the whole job from Python, on the offline local runner or any Beam runner."""

from __future__ import annotations

import glob
import json
import os
import posixpath
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

OUTPUT_ENTRIES = ("schema.pbtxt", "stats.json", "stats.html", "train", "eval", "errors")


@dataclass
class Summary:
    """What a run produced. ``splits`` maps split → number of records written."""

    output: str
    rows_read: int
    errors: int
    splits: dict[str, int]
    shards: dict[str, list[str]]
    schema: str
    stats: str
    errors_dir: str
    seconds: float
    runner: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def rows_out(self) -> int:
        return sum(self.splits.values())

    def to_dict(self) -> dict:
        return asdict(self) | {"rows_out": self.rows_out}


def _check_inputs(patterns: Sequence[str], features=None, fmt: str | None = None,
                  absent_ok: Sequence[str] = ()) -> None:
    """Fail before anything is written: a pattern matching no file, or (given the feature set) a
    CSV header or Parquet schema lacking a declared input not in ``absent_ok``."""
    # Beam's matcher, as the job reads: its ``**`` spans directories (``dir/**.py``), Python's
    # ``glob`` does not.
    from apache_beam.io.filesystems import FileSystems

    for pattern in patterns:
        if "://" in pattern:
            continue
        if not FileSystems.match([pattern])[0].metadata_list:
            raise FileNotFoundError(f"no input files match {pattern!r}")
    if features is not None:
        from shardforge.pipelines.transforms import FeatureSetRef, check_input_columns

        ref = features if isinstance(features, FeatureSetRef) else FeatureSetRef(features)
        check_input_columns(patterns, ref, fmt, absent_ok)


def _prepare_output(output: str, overwrite: bool) -> None:
    if "://" in output:
        return
    existing = [e for e in OUTPUT_ENTRIES if os.path.exists(os.path.join(output, e))]
    if existing and not overwrite:
        raise FileExistsError(
            f"{output} already holds {', '.join(existing)}; pass overwrite=True (--overwrite) "
            "to replace them"
        )
    import shutil

    for e in existing:
        path = os.path.join(output, e)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    os.makedirs(output, exist_ok=True)


def _read_json(path: str) -> dict:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
        return json.loads(f.read())


def run_pipeline(features, input: str | Sequence[str], output: str, *, fmt: str | None = None,
                 eval_fraction: float = 0.1, split_key: str | None = None,
                 num_shards: int | None = None, shard_size: int | str = "128MB",
                 compression: str | None = None, max_error_fraction: float = 0.01,
                 beam_args: Sequence[str] = (), overwrite: bool = False,
                 chunk_rows: int | None = None, absent_ok: Sequence[str] = (),
                 non_finite: str = "error") -> Summary:
    """Run the preprocessing job and wait for it.

    ``features`` is a ``FeatureSet`` or the path of a ``.py`` file defining ``FEATURES``;
    ``input`` a glob (or several); ``beam_args`` any Beam pipeline options
    (default: the offline local runner with two worker processes). ``absent_ok`` and
    ``non_finite``: see :class:`~shardforge.pipelines.transforms.Preprocess`.

    >>> s = run_pipeline("examples/click_features.py", "clicks.csv", "out/")  # doctest: +SKIP
    >>> s.splits, s.errors                                                     # doctest: +SKIP
    ({'eval': 2013, 'train': 17987}, 0)

    Raises :class:`TooManyErrors` when more than ``max_error_fraction`` of the rows fail (the
    errors are in ``output/errors/`` and no shards are written).
    """
    from apache_beam.options.pipeline_options import StandardOptions

    from shardforge.pipelines import sources
    from shardforge.pipelines.options import make_options, make_pipeline
    from shardforge.pipelines.transforms import Preprocess, TooManyErrors

    patterns = [input] if isinstance(input, str) else list(input)
    _check_inputs(patterns, features, fmt, absent_ok)
    _prepare_output(output, overwrite)
    options = make_options(beam_args)
    transform = Preprocess(
        features, patterns, output, fmt=fmt, eval_fraction=eval_fraction, split_key=split_key,
        num_shards=num_shards, shard_size=shard_size, compression=compression,
        max_error_fraction=max_error_fraction,
        chunk_rows=chunk_rows or sources.DEFAULT_CHUNK_ROWS, absent_ok=absent_ok,
        non_finite=non_finite, check_inputs=False,
    )
    start = time.perf_counter()
    pipeline = make_pipeline(options=options)
    pipeline | "Preprocess" >> transform
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except TooManyErrors:
        raise
    except Exception as err:
        # Worker processes report failures as text; surface the budget failure as its own type.
        found = re.search(r"\d+ of \d+ input rows failed[^\n\[]*", str(err))
        if found:
            raise TooManyErrors(found.group(0).strip()) from None
        raise
    seconds = time.perf_counter() - start
    stats_path = posixpath.join(output, "stats.json")
    doc = _read_json(stats_path)
    shards = {
        split: sorted(p for p in glob.glob(os.path.join(output, split, "part-*"))
                      if not p.endswith(".idx"))
        for split in doc["splits"]
    } if "://" not in output else {}
    return Summary(
        output=output, rows_read=doc["rows_read"], errors=doc["errors"],
        splits={s: v["records"] for s, v in doc["splits"].items()}, shards=shards,
        schema=posixpath.join(output, "schema.pbtxt"), stats=stats_path,
        errors_dir=posixpath.join(output, "errors"), seconds=seconds,
        runner=str(options.view_as(StandardOptions).runner or "local FnApiRunner"),
    )
