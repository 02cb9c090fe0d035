"""Records test helpers. TensorFlow is the format oracle: imported lazily, never skipped."""

import numpy as np
import pytest

from shardforge.records import Ragged

# (our compression, file suffix, TensorFlow's compression_type)
COMPRESSIONS = [(None, ".tfrecord", ""), ("gzip", ".tfrecord.gz", "GZIP"),
                ("zlib", ".tfrecord.zz", "ZLIB")]


@pytest.fixture(scope="session")
def tf():
    import tensorflow

    return tensorflow


def assert_batches_equal(a, b):
    """Same columns, shapes, dtypes and values (NaNs equal, Ragged splits and values equal)."""
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name], b[name]
        if isinstance(x, Ragged):
            assert isinstance(y, Ragged), name
            np.testing.assert_array_equal(x.row_splits, y.row_splits, err_msg=name)
            x, y = x.values, y.values
        assert x.shape == y.shape and x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
