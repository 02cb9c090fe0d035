"""A job's schema as a TensorFlow Metadata schema (``schema_tfmd.pbtxt``), the file TFDV and TFX
components read (``tfdv.load_schema_text``, ``ImportSchemaGen``).

    from shardforge.interop.tfmd import tfmd_schema_text
    text = tfmd_schema_text(load_schema("out/"))

The mapping follows tf.Transform's ``schema_utils.schema_from_feature_spec``, so
``schema_as_feature_spec`` of the result gives back the job's parse spec: a fixed-length feature
has ``shape`` and ``presence { min_fraction: 1 }``, a variable-length one neither (TF's
``VarLenFeature``). Features are sorted by name, as tf.Transform writes them. On top of that:
a categorical feature gets ``int_domain { min: 0 max: num_buckets - 1 is_categorical: true }``
(ids out of that range are anomalies), and labels are left out of the ``SERVING`` environment
(TFDV's convention for features a serving request does not carry).

The text is produced without the ``tensorflow_metadata`` package (the pipeline writes it on every
run, and the base install does not depend on TensorFlow's packages); the tests parse it with
``tensorflow_metadata``'s own ``schema_pb2``.
"""

from __future__ import annotations

import os

from google.protobuf import text_encoding

from shardforge.features.state import Schema, load_schema
from shardforge.protos import schema_pb2
from shardforge.records.layout import atomic_write

TFMD_SCHEMA_FILE = "schema_tfmd.pbtxt"
ENVIRONMENTS = ("TRAINING", "SERVING")
_TFMD_TYPE = {schema_pb2.INT64: "INT", schema_pb2.FLOAT32: "FLOAT", schema_pb2.BYTES: "BYTES"}


def _quoted(text: str) -> str:
    return '"' + text_encoding.CEscape(text, as_utf8=True) + '"'


def tfmd_schema_text(schema: Schema) -> str:
    """``schema`` (a job's loaded schema) as a ``tensorflow.metadata.v0.Schema`` in text format.

    >>> print(tfmd_schema_text(load_schema("out/")))      # doctest: +SKIP
    feature {
      name: "age_bucketized"
      type: INT
      presence {
        min_fraction: 1.0
      }
      shape {
      }
      int_domain {
        min: 0
        max: 9
        is_categorical: true
      }
    }
    ...
    """
    labels = set(schema.labels)
    lines: list[str] = []
    for f in sorted(schema.features, key=lambda f: f.name):
        lines += ["feature {", f"  name: {_quoted(f.name)}", f"  type: {_TFMD_TYPE[f.dtype]}"]
        if not f.varlen:
            lines += ["  presence {", "    min_fraction: 1.0", "  }", "  shape {"]
            lines += [f"    dim {{\n      size: {int(d)}\n    }}" for d in f.shape]
            lines += ["  }"]
        if f.kind == schema_pb2.Feature.CATEGORICAL and f.num_buckets > 0:
            lines += ["  int_domain {", "    min: 0", f"    max: {int(f.num_buckets) - 1}",
                      "    is_categorical: true", "  }"]
        if f.is_label or f.name in labels:
            lines += ['  not_in_environment: "SERVING"']
        lines += ["}"]
    lines += [f"default_environment: {_quoted(env)}" for env in ENVIRONMENTS]
    return "\n".join(lines) + "\n"


def write_tfmd_schema(output_dir: str) -> str:
    """Write ``schema_tfmd.pbtxt`` beside the ``schema.pbtxt`` of a local job output (through
    ``records.layout.atomic_write``); returns its path.

    >>> write_tfmd_schema("out/")                           # doctest: +SKIP
    'out/schema_tfmd.pbtxt'
    """
    return atomic_write(os.path.join(output_dir, TFMD_SCHEMA_FILE),
                        tfmd_schema_text(load_schema(output_dir)))
