"""The VLM demo's feature set over the synthetic corpus (shardforge/examples/vision_corpus.py).

    shardforge run --features shardforge/examples/vision_features.py \
        --input corpus/corpus.jsonl --output out/

- ``tokens``: the caption's words as ids of a fixed vocabulary (``<image>`` is id 0: the image
  marker of interleaved samples and the placeholder id of the packed batches);
- ``image``: each sample's images at native resolution, 14-pixel patches, 2x2 merge (KimiVL /
  Qwen2-VL), at most 56 x 56 pixels (16 patches, aspect kept: 28 x 84 is 2 x 6 patches) so the
  demo trains on two CPU cores, normalized with the mean/std learned in the analyze pass;
- ``fused``: the same text with each image as discrete tokens (a 128-code k-means codebook of
  8-pixel patches learned in the analyze pass, up to 48 x 48 pixels), for the early-fusion LM.

Image paths in the corpus are relative to it: ``feature_set(root)`` resolves them against
``root`` (``FEATURES`` against the row's input file directory where the reader provides it,
else the working directory).
"""

import shardforge.features as sf
from shardforge.examples.vision_corpus import VOCAB

IMAGE_TOKEN_ID = VOCAB.index("<image>")
TEXT_VOCAB_SIZE = len(VOCAB) + 1  # the fixed words and one OOV bucket
CODEBOOK_SIZE = 128


def feature_set(root: str | None = None) -> sf.FeatureSet:
    words = sf.text("text", vocabulary_list=VOCAB, num_oov_buckets=1, name="tokens")
    return sf.FeatureSet([
        words,
        sf.image("images", patch_size=14, merge_size=2, min_pixels=28 * 28,
                 max_pixels=56 * 56, normalize="learned", root=root, name="image"),
        sf.image_tokens("images", text=words, text_vocab_size=TEXT_VOCAB_SIZE,
                        marker_id=IMAGE_TOKEN_ID, codebook_size=CODEBOOK_SIZE, patch_size=8,
                        min_pixels=16 * 16, max_pixels=48 * 48, root=root, name="fused"),
    ])


FEATURES = feature_set()
