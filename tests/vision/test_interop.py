"""transformers interop: the image column's patches are Qwen2-VL's processor's, and a tiny
Qwen2-VL model (random weights, no download) gives the loader's batch the same loss as the batch
its own processor builds from the same samples."""

import io
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
from PIL import Image  # noqa: E402
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (  # noqa: E402
    Qwen2VLImageProcessorPil,
)

from shardforge.records import TFRecordWriter, build_index, encode_example  # noqa: E402
from shardforge.training.mm_packing import hf_vlm_inputs, multimodal_loader  # noqa: E402
from shardforge.vision import (  # noqa: E402
    CLIP_MEAN,
    CLIP_STD,
    VisionLayout,
    decode_image,
    encode_pixels,
    grid_of,
    patchify,
    resize_image,
)

SPECIAL = ["<|endoftext|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
WORDS = "a red blue green circle square triangle on the left right top bottom small big".split()


def png(arr, mode=None):
    buf = io.BytesIO()
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    img.save(buf, "PNG")
    return buf.getvalue()


def jpeg_with_exif_rotation(arr, orientation):
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    return buf.getvalue()


def sixteen_bit(arr):
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint16) * 257).save(buf, "PNG")
    return buf.getvalue()


def _images(seed=0):
    rng = np.random.default_rng(seed)

    def rgb(h, w, c=3):
        return rng.integers(0, 256, (h, w, c), dtype=np.uint8)

    return {
        "rgb": png(rgb(100, 60)),
        "tall gray": png(rgb(300, 40), "L"),
        "palette": png(rgb(50, 70), "P"),
        "rgba": png(rgb(64, 64, 4)),
        "tiny": png(rgb(5, 7)),
        "large": png(rgb(1200, 900)),
        "exif rotated": jpeg_with_exif_rotation(rgb(80, 120), 6),
        "cmyk": (lambda b: (Image.fromarray(rgb(90, 90)).convert("CMYK").save(b, "JPEG"),
                            b.getvalue())[1])(io.BytesIO()),
    }


@pytest.mark.parametrize("resample", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("layout", [VisionLayout(min_pixels=56 * 56, max_pixels=448 * 448),
                                    VisionLayout(patch_size=16, merge_size=2,
                                                 min_pixels=32 * 32, max_pixels=512 * 512)],
                         ids=["qwen2vl-14", "patch-16"])
def test_patches_equal_qwen2vl_image_processor(layout, resample):
    from PIL import ImageOps

    pil = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
    proc = Qwen2VLImageProcessorPil(min_pixels=layout.min_pixels, max_pixels=layout.max_pixels,
                                    patch_size=layout.patch_size, merge_size=layout.merge_size,
                                    resample=pil[resample])
    for name, data in _images().items():
        # transformers' load_image applies the EXIF orientation before the processor
        ref = proc(images=[ImageOps.exif_transpose(Image.open(io.BytesIO(data)))],
                   return_tensors="np")
        pixels = resize_image(decode_image(data), layout, resample)
        assert list(ref["image_grid_thw"][0]) == list(grid_of(pixels, layout)), name
        np.testing.assert_array_equal(patchify(pixels, layout), ref["pixel_values"],
                                      err_msg=name)


def test_exif_orientation_is_applied():
    arr = np.zeros((20, 40, 3), np.uint8)
    img = decode_image(jpeg_with_exif_rotation(arr, 6))  # 6: rotate 90° clockwise to view
    assert img.size == (20, 40)


def test_sixteen_bit_keeps_the_high_byte():
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img = np.asarray(decode_image(sixteen_bit(arr)))
    assert np.array_equal(img[..., 0], arr) and np.array_equal(img[..., 2], arr)


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIAL)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>",
                                   padding_side="right")


def tiny_qwen2vl(vocab_size, layout):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                         max_position_embeddings=4096),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2,
                           patch_size=layout.patch_size, spatial_merge_size=layout.merge_size,
                           temporal_patch_size=layout.temporal_patch_size, in_channels=3),
        image_token_id=SPECIAL.index("<|image_pad|>"),
        vision_start_token_id=SPECIAL.index("<|vision_start|>"),
        vision_end_token_id=SPECIAL.index("<|vision_end|>"),
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    torch.manual_seed(0)
    return Qwen2VLForConditionalGeneration(cfg).eval()


def image_text_processor(image_processor, tokenizer):
    """Qwen2VLProcessor without its video processor, which needs torchvision (not installable
    beside this CPU torch): the image and text paths are Qwen2VLProcessor's own code."""
    from transformers import Qwen2VLProcessor

    class ImageTextProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template)

    return ImageTextProcessor(image_processor=image_processor, tokenizer=tokenizer)


def test_tiny_qwen2vl_gives_the_loader_batch_its_processor_batch_loss(tmp_path):
    layout = VisionLayout(patch_size=14, merge_size=2, min_pixels=28 * 28, max_pixels=112 * 112)
    tokenizer = tiny_tokenizer()
    proc = image_text_processor(
        Qwen2VLImageProcessorPil(min_pixels=layout.min_pixels, max_pixels=layout.max_pixels),
        tokenizer)
    images = list(_images().values())[:4]
    texts = [
        "<|vision_start|><|image_pad|><|vision_end|> a red circle on the left",
        "a blue square <|vision_start|><|image_pad|><|vision_end|> small",
        "<|vision_start|><|image_pad|><|vision_end|> big green triangle "
        "<|vision_start|><|image_pad|><|vision_end|> top",
    ]
    sample_images = [[images[0]], [images[1]], [images[2], images[3]]]
    # the processor's batch, labels without loss on padding and placeholders (HF convention)
    ref = proc(text=texts, images=[Image.open(io.BytesIO(d)) for s in sample_images for d in s],
               padding=True, return_tensors="pt")
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    labels = ref["input_ids"].clone()
    labels[(ref["attention_mask"] == 0) | (labels == image_pad)] = -100
    # our batch: a shard of (tokens with one marker per image, stored resized images), read
    # by the multimodal loader
    stored = [[encode_pixels(resize_image(decode_image(d), layout), layout) for d in sample]
              for sample in sample_images]
    shard = tmp_path / "train" / "part-00000-of-00001.tfrecord"
    shard.parent.mkdir()
    with TFRecordWriter(shard) as w:
        for t, images in zip(texts, stored):
            w.write(encode_example({"tokens": tokenizer(t)["input_ids"], "image": images}))
    build_index(shard)
    loader = multimodal_loader(str(shard.parent), token_budget=4096, patch_budget=4096,
                               image_token_id=image_pad, shuffle=False, mean=CLIP_MEAN,
                               std=CLIP_STD)
    (batch,) = list(loader)
    ours = hf_vlm_inputs(batch, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["attention_mask"], ref["attention_mask"])
    assert torch.equal(ours["mm_token_type_ids"], ref["mm_token_type_ids"])
    assert torch.equal(ours["image_grid_thw"], ref["image_grid_thw"])
    assert torch.equal(ours["pixel_values"], ref["pixel_values"])
    model = tiny_qwen2vl(len(tokenizer), layout)
    with torch.no_grad():
        ref_loss = model(**{k: ref[k] for k in ("input_ids", "attention_mask", "pixel_values",
                                                "image_grid_thw", "mm_token_type_ids")},
                         labels=labels).loss
        our_loss = model(**ours).loss
    assert torch.isfinite(ref_loss)
    torch.testing.assert_close(our_loss, ref_loss, rtol=0, atol=0)
