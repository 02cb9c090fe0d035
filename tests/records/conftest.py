"""Records test helpers. TensorFlow is the format oracle: imported lazily, never skipped."""

import pytest

# (our compression, file suffix, TensorFlow's compression_type)
COMPRESSIONS = [(None, ".tfrecord", ""), ("gzip", ".tfrecord.gz", "GZIP"),
                ("zlib", ".tfrecord.zz", "ZLIB")]


@pytest.fixture(scope="session")
def tf():
    import tensorflow

    return tensorflow
