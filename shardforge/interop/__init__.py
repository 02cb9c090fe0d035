"""Interop with other tools' formats: TensorFlow (``tf``: ``tf.data``, parse specs; the ``tf``
extra) and TensorFlow Metadata (``tfmd``: the schema TFDV and TFX read). The HuggingFace
keyword arguments of a packed batch are :func:`shardforge.training.hf_kwargs`.
"""
