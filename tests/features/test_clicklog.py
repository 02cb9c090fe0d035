"""The example click log: deterministic, CSV round trip, and a learnable label."""

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from shardforge.examples.click_features import FEATURES  # noqa: E402
from shardforge.examples.clicklog import click_logit, generate_clicklog, write_csv  # noqa: E402


def auc(scores, labels):
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels == 1
    return (ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum())


def test_generator_is_deterministic_and_shaped():
    a, b = generate_clicklog(2000, seed=5), generate_clicklog(2000, seed=5)
    assert set(a) == {"label", "price", "age", "country", "item_id", "query", "lat", "lon"}
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
    assert 0.01 < np.isnan(a["price"]).mean() < 0.1
    assert len(set(a["country"])) > 50 and len(set(a["item_id"])) > 500
    n_words = np.array([len(q.split()) for q in a["query"]])
    assert n_words.min() >= 1 and n_words.max() <= 20
    assert auc(click_logit(a), a["label"]) > 0.7  # the known relationship is strong


def test_csv_round_trip_through_coerce(tmp_path):
    import csv

    path = write_csv(str(tmp_path / "clicks.csv"), 500, seed=1)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    raw = {k: [r[k] for r in rows] for k in rows[0]}
    batch, errors = FEATURES.coerce(raw, row_ids=[f"clicks.csv:{i + 2}" for i in range(500)])
    assert errors == []
    cols = generate_clicklog(500, seed=1)
    np.testing.assert_allclose(batch["price"], cols["price"].astype(np.float32), rtol=1e-6)
    assert batch["query"].tolist() == cols["query"].tolist()


def test_tabular_model_learns_the_label():
    torch = pytest.importorskip("torch")
    import shardforge.features as sf

    torch.manual_seed(0)
    train, errors = FEATURES.coerce(generate_clicklog(4_000, seed=0))
    test, _ = FEATURES.coerce(generate_clicklog(4_000, seed=1))
    state = FEATURES.fit([train])
    layer = sf.FeatureLayer(FEATURES.schema(state))
    head = torch.nn.Linear(layer.output_dim, 1)
    params = [*layer.parameters(), *head.parameters()]
    xtr = FEATURES.transform(train, state)
    y = torch.as_tensor(xtr["label"], dtype=torch.float32)
    for _ in range(12):  # a few full-batch steps: enough to learn, too few to overfit items
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(layer(xtr))[:, 0], y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():  # plain SGD: torch.optim would import torch._dynamo (seconds)
            for p, g in zip(params, grads):
                p -= 2.0 * g
    xte = FEATURES.transform(test, state)
    with torch.no_grad():
        scores = head(layer(xte))[:, 0].numpy()
    assert auc(scores, xte["label"]) > 0.6
