"""shardforge: declarative features, Beam jobs to TFRecord shards, padding-free PyTorch training.

Subpackages (import what you need; nothing here imports Beam, TensorFlow or Triton):

- ``shardforge.records``   TFRecord framing, tf.Example codec, index files, Arrow conversion
- ``shardforge.features``  FeatureColumn-style declarations, analyzers, vectorized transforms
- ``shardforge.pipelines`` Apache Beam jobs: read, analyze, transform, write shards
- ``shardforge.training``  sharded resumable loaders, sequence packing, models, trainer
- ``shardforge.kernels``   Triton varlen FlashAttention and fused AdamW with torch references
"""

__version__ = "0.1.0"
