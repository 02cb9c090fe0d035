"""The packed LM gives each document the outputs it would get alone; the tabular pieces work."""

import numpy as np
import pytest
import torch

from shardforge.training.models.lm import LMConfig, PackedLM, apply_rope, rope_cos_sin
from shardforge.training.models.tabular import roc_auc
from shardforge.training.packing import flatten_documents, shift_labels

CONFIGS = {
    "gqa": LMConfig(vocab_size=50, n_layer=2, n_head=4, n_kv_head=2, d_model=32),
    "qk_norm_zloss_untied": LMConfig(vocab_size=50, n_layer=2, n_head=4, n_kv_head=1, d_model=32,
                                     qk_norm=True, z_loss=1e-4, tie_embeddings=False),
}


def _packed(docs):
    batch = flatten_documents(docs)
    return {k: torch.as_tensor(batch[k]) for k in ("input_ids", "labels", "position_ids",
                                                   "cu_seqlens")}, int(batch["max_seqlen"])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_packed_batch_equals_each_document_alone(name):
    torch.manual_seed(0)
    model = PackedLM(CONFIGS[name]).eval()
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 50, n).tolist() for n in (7, 1, 12, 3)]
    batch, max_seqlen = _packed(docs)
    targets = shift_labels(batch["labels"])
    packed = model(batch["input_ids"], batch["position_ids"], batch["cu_seqlens"], max_seqlen,
                   targets=targets)
    cu = batch["cu_seqlens"].tolist()
    total_ce, n_targets = 0.0, 0
    for i, doc in enumerate(docs):
        ids = torch.tensor(doc)
        alone = model(ids, torch.arange(len(doc)), torch.tensor([0, len(doc)], dtype=torch.int32),
                      len(doc), targets=torch.cat([ids[1:], torch.tensor([-100])]))
        torch.testing.assert_close(packed.logits[cu[i]:cu[i + 1]], alone.logits,
                                   atol=1e-5, rtol=1e-5)
        total_ce += alone.ce.item() * (len(doc) - 1)
        n_targets += len(doc) - 1
    # the packed loss is the token-weighted mean of the per-document losses: nothing crosses a
    # boundary and nothing is counted twice
    assert (targets != -100).sum().item() == n_targets
    assert packed.ce.item() == pytest.approx(total_ce / n_targets, rel=1e-5)
    if CONFIGS[name].z_loss:
        assert packed.loss.item() > packed.ce.item()


def test_tied_embeddings_and_gradients_flow():
    model = PackedLM(CONFIGS["gqa"])
    assert model.lm_head.weight is model.embed.weight
    batch, max_seqlen = _packed([[1, 2, 3, 4], [5, 6]])
    out = model(batch["input_ids"], batch["position_ids"], batch["cu_seqlens"], max_seqlen,
                targets=shift_labels(batch["labels"]))
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # an untrained model is close to uniform: loss ~ log(vocab)
    assert out.ce.item() == pytest.approx(np.log(50), rel=0.1)


def test_rope_is_relative():
    # <rot(q, m), rot(k, n)> depends only on m - n
    q, k = torch.randn(1, 1, 8), torch.randn(1, 1, 8)

    def dot(m, n):
        cq, sq = rope_cos_sin(torch.tensor([m]), 8, 10000.0)
        ck, sk = rope_cos_sin(torch.tensor([n]), 8, 10000.0)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum().item()

    assert dot(5, 2) == pytest.approx(dot(13, 10), abs=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        LMConfig(n_head=4, n_kv_head=3, d_model=32)


def test_roc_auc_matches_pair_counting():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels, 1)  # ties on purpose
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(labels, scores) == pytest.approx(pairs)
    assert roc_auc([0, 1], [0.1, 0.9]) == 1.0
