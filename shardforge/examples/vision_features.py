"""The VLM demo's feature set over the synthetic corpus (shardforge/examples/vision_corpus.py).

    shardforge run --features shardforge/examples/vision_features.py \
        --input corpus/corpus.jsonl --output out/

``tokens``: the caption's words as ids of a fixed vocabulary (``<image>`` is id 0: the image
marker of interleaved samples and the placeholder id of the packed batches); ``image``: each
sample's images at native resolution, 14-pixel patches, 2x2 merge (KimiVL / Qwen2-VL), at most
112 x 112 pixels (64 patches) so the demo trains on two CPU cores.
"""

import shardforge.features as sf
from shardforge.examples.vision_corpus import VOCAB

IMAGE_TOKEN_ID = VOCAB.index("<image>")

FEATURES = sf.FeatureSet([
    sf.text("text", vocabulary_list=VOCAB, num_oov_buckets=1, name="tokens"),
    sf.image("images", patch_size=14, merge_size=2, min_pixels=28 * 28, max_pixels=112 * 112,
             normalize="learned", name="image"),
])
