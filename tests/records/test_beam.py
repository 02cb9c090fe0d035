"""Apache Beam reads our shards and we read Beam's (the pure-Python BundleBasedDirectRunner:
offline, never the Prism runner binary)."""

import glob

from shardforge.records import ShardedWriter, read_records

RECORDS = [f"beam-{i}".encode() * (i % 5 + 1) for i in range(200)]


def _pipeline():
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    return beam, beam.Pipeline(options=PipelineOptions(runner="BundleBasedDirectRunner"))


def test_beam_reads_our_shards_and_we_read_beams(tmp_path):
    with ShardedWriter(tmp_path / "ours", num_shards=2, compression="gzip") as w:
        for r in RECORDS:
            w.write(r)
    beam, p = _pipeline()
    with p:
        got = p | beam.io.ReadFromTFRecord(str(tmp_path / "ours" / "*.tfrecord.gz"))
        (got | beam.combiners.ToList() | beam.Map(sorted)
             | beam.io.WriteToText(str(tmp_path / "seen"), shard_name_template=""))
        (p | beam.Create(RECORDS)
           | beam.io.WriteToTFRecord(str(tmp_path / "beam" / "part"),
                                     file_name_suffix=".tfrecord.gz", num_shards=2))
    seen = open(tmp_path / "seen").read()
    assert seen.strip() == repr(sorted(RECORDS))
    beam_files = sorted(glob.glob(str(tmp_path / "beam" / "part*.tfrecord.gz")))
    assert len(beam_files) == 2
    assert sorted(read_records(beam_files)) == sorted(RECORDS)
