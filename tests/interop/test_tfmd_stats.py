"""stats.json as TFMD's DatasetFeatureStatisticsList: parsed by tensorflow_metadata's own
statistics_pb2, the numbers those of the generated click log (numpy)."""

import numpy as np
import pytest

pytest.importorskip("tensorflow_metadata")


def test_statistics_parse_and_match_the_data(tmp_path):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import statistics_pb2

    import shardforge.features as sf
    from shardforge.examples import clicklog
    from shardforge.interop.tfmd_stats import tfmd_statistics_text
    from shardforge.pipelines.skew import read_rows, stats_doc
    from tests.pipelines.helpers import CLICK_FEATURES

    n = 4000
    cols = clicklog.generate_clicklog(n, seed=3)
    fs = sf.load_feature_set(CLICK_FEATURES)
    path = clicklog.columns_to_csv(str(tmp_path / "clicks.csv"), cols)
    doc = stats_doc(fs, read_rows(fs, path))
    stats = text_format.Parse(tfmd_statistics_text(doc),
                              statistics_pb2.DatasetFeatureStatisticsList())
    assert [d.name for d in stats.datasets] == ["train", "train/transformed"]
    raw = {f.path.step[0]: f for f in stats.datasets[0].features}
    assert stats.datasets[0].num_examples == n

    price = raw["price"]
    values = cols["price"].astype(np.float32).astype(np.float64)
    present = values[~np.isnan(values)]
    assert price.type == statistics_pb2.FeatureNameStatistics.FLOAT
    assert price.num_stats.common_stats.num_missing == np.isnan(values).sum()
    assert price.num_stats.mean == pytest.approx(present.mean(), rel=1e-12)
    assert price.num_stats.std_dev == pytest.approx(present.std(), rel=1e-9)
    assert price.num_stats.max == present.max()
    (hist,) = price.num_stats.histograms
    assert sum(b.sample_count for b in hist.buckets) == len(present)
    assert hist.num_nan == np.isnan(values).sum()

    country = raw["country"]
    codes, counts = np.unique(cols["country"].astype(str), return_counts=True)
    assert country.type == statistics_pb2.FeatureNameStatistics.STRING
    assert country.string_stats.unique == len(codes)
    assert country.string_stats.top_values[0].value == codes[counts.argmax()]
    assert country.string_stats.top_values[0].frequency == counts.max()
    ranks = {b.label: b.sample_count for b in country.string_stats.rank_histogram.buckets}
    assert ranks == dict(zip(codes, counts))

    query = {f.path.step[0]: f for f in stats.datasets[1].features}["query"]
    lengths = [len(q.split()) for q in cols["query"]]
    assert query.string_stats.common_stats.avg_num_values == pytest.approx(np.mean(lengths))
    assert query.string_stats.common_stats.tot_num_values == sum(lengths)
