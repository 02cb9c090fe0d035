"""Interop with other tools' formats: TensorFlow (``tf``: ``tf.data``, parse specs; the ``tf``
extra) and TensorFlow Metadata (``tfmd``: the schema TFDV and TFX read). The HuggingFace
keyword arguments of a packed batch are :func:`shardforge.training.hf_kwargs`.

    from shardforge.interop import tf_dataset, tfmd_schema_text

Names resolve on first use, so importing this package imports no TensorFlow.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "tf_dataset": "tf", "tf_feature_spec": "tf", "detect_compression": "tf",
    "tfmd_schema_text": "tfmd", "write_tfmd_schema": "tfmd", "TFMD_SCHEMA_FILE": "tfmd",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"shardforge.interop.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'shardforge.interop' has no attribute {name!r}")
