"""Packed batches through a transformers causal LM: ``model(**hf_kwargs(batch))`` must give every
document the logits it gets alone (no attention across document boundaries)."""

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from shardforge.training.packing import flatten_documents, hf_kwargs  # noqa: E402

DOC_LENGTHS = (7, 1, 12, 5, 9)


def tiny_model(attn: str, family: str = "Llama") -> torch.nn.Module:
    """A randomly initialised causal LM of a transformers family, from a config (no download)."""
    config = getattr(transformers, f"{family}Config")(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        attn_implementation=attn,
    )
    torch.manual_seed(0)
    return getattr(transformers, f"{family}ForCausalLM")(config).eval()


def tiny_llama(attn: str) -> torch.nn.Module:
    return tiny_model(attn, "Llama")


def documents() -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 97, n).tolist() for n in DOC_LENGTHS]


@pytest.mark.parametrize("family,attn", [("Llama", "eager"), ("Llama", "sdpa"),
                                         ("Qwen2", "sdpa"), ("Mistral", "sdpa")])
def test_packed_logits_equal_each_document_alone(family, attn):
    model, docs = tiny_model(attn, family), documents()
    batch = flatten_documents(docs)
    with torch.no_grad():
        packed = model(**hf_kwargs(batch)).logits[0]
        cu = batch["cu_seqlens"].tolist()
        for i, doc in enumerate(docs):
            alone = model(input_ids=torch.tensor([doc])).logits[0]
            torch.testing.assert_close(packed[cu[i]:cu[i + 1]], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_loss_is_the_token_mean_of_the_documents_losses(attn):
    model, docs = tiny_llama(attn), documents()
    with torch.no_grad():
        packed = model(**hf_kwargs(flatten_documents(docs))).loss
        total, count = 0.0, 0
        for doc in docs:
            ids = torch.tensor([doc])
            if len(doc) > 1:
                total += float(model(input_ids=ids, labels=ids).loss) * (len(doc) - 1)
                count += len(doc) - 1
    assert float(packed) == pytest.approx(total / count, rel=1e-5)


def test_a_cache_would_contaminate_the_packed_documents():
    """The reason for ``use_cache=False``: with a cache transformers drops the packed mask."""
    model, docs = tiny_llama("sdpa"), documents()
    batch = flatten_documents(docs)
    with torch.no_grad():
        safe = model(**hf_kwargs(batch)).logits[0]
        cached = model(**{**hf_kwargs(batch), "use_cache": True}).logits[0]
    later = slice(int(batch["cu_seqlens"][1]), None)  # every document after the first
    assert (safe[later] - cached[later]).abs().max() > 1e-3


def test_keys_and_values_match_data_collator_with_flattening():
    docs = documents()
    theirs = transformers.DataCollatorWithFlattening(return_flash_attn_kwargs=True)(
        [{"input_ids": d} for d in docs], return_tensors="pt")
    ours = hf_kwargs(flatten_documents(docs))
    assert set(ours) - {"use_cache"} == set(theirs)
    for key, value in theirs.items():
        if isinstance(value, torch.Tensor):
            assert ours[key].tolist() == value.tolist(), key
        else:
            assert ours[key] == value, key
    assert ours["use_cache"] is False


def test_batches_with_shardforge_names_only_or_as_numpy():
    """A packed batch whose derived keys were dropped (e.g. a worker's compact form) or that
    holds numpy arrays gives the same kwargs."""
    full = flatten_documents(documents())
    compact = {k: full[k] for k in ("input_ids", "labels", "position_ids", "cu_seqlens",
                                    "max_seqlen")}
    as_numpy = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in full.items()}
    expected = hf_kwargs(full)
    for batch in (compact, as_numpy):
        got = hf_kwargs(batch)
        assert set(got) == set(expected)
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(got[key], value) and got[key].dtype == value.dtype, key
            else:
                assert got[key] == value, key
