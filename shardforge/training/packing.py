"""Padding-free sequence packing ("rmpad"): plan bins from lengths, build flat packed batches.

A **packed batch** concatenates whole documents (or pieces of documents longer than the budget)
into one flat sequence of ``T`` tokens with no padding anywhere. Attention kernels see the
document boundaries through ``cu_seqlens`` (flash-attention's varlen convention): document ``i``
occupies tokens ``cu_seqlens[i]:cu_seqlens[i + 1]``.

Keys of a packed batch (torch tensors unless noted)::

    input_ids       int64 [T]        the tokens, documents back to back
    labels          int64 [T]        input_ids, with -100 at the first token of every document
    position_ids    int64 [T]        0, 1, 2, ... restarting at every document
    cu_seqlens      int32 [n + 1]    cumulative document lengths, starting at 0, ending at T
    max_seqlen      int              longest document in the batch
    doc_ids         int64 [n]        caller's id of each document (record id for loaders)
    doc_offsets     int64 [n]        token offset of the piece inside its document (0 unless split)
    num_tokens      int              T
    packing_efficiency  float        T / packing_length (1.0 for flattened batches)
    cu_seq_lens_q, cu_seq_lens_k, max_length_q, max_length_k
                                     the same boundaries under HuggingFace's keyword names
    <side feature>  [n, ...]         per-document features, one row per document

**Label convention (HuggingFace's).** ``labels`` is *not* shifted: ``labels[t] == input_ids[t]``
except ``labels[cu_seqlens[i]] == -100`` for every document ``i``. A causal LM computes logits at
every position and shifts itself: the loss is ``cross_entropy(logits[:-1], labels[1:],
ignore_index=-100)``, i.e. position ``t`` predicts ``labels[t + 1]``. Because the first token of
each document is -100, the last token of document ``i`` is never trained to predict the first
token of document ``i + 1``: no loss crosses a boundary. :func:`shift_labels` returns the targets
already aligned with the logits (``targets[t] = labels[t + 1]``, ``targets[T - 1] = -100``) for
models that do not shift. A document split into pieces loses one target per extra piece (each
piece starts a new attention segment with its own -100).

>>> import numpy as np
>>> plan = plan_packs(np.array([6, 3, 5, 2]), packing_length=8)
>>> [plan.bin(i).tolist() for i in range(len(plan))], plan.efficiency()
([[0, 3], [1, 2]], 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import torch

from shardforge.records.spec import Batch, FixedLen, Ragged, Spec, VarLen

if TYPE_CHECKING:
    from shardforge.features.state import Schema

IGNORE_INDEX = -100
STRATEGIES = ("ffd", "bfd", "nf")
OVERFLOW = ("split", "truncate")


# --------------------------------------------------------------------------------------------
# Planning: which document pieces go into which bin. Everything here works on lengths only.
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _first_fit(sizes: np.ndarray, capacity: int, bins: np.ndarray) -> int:
    """First fit in the given order; a max segment tree over bins' free space finds the leftmost
    bin that fits in O(log n). Unopened bins have full capacity, so they are found last."""
    n = len(sizes)
    width = 1
    while width < max(n, 1):
        width *= 2
    tree = np.full(2 * width, capacity, dtype=np.int64)
    n_bins = 0
    for i in range(n):
        size = sizes[i]
        node = 1
        while node < width:
            node = 2 * node if tree[2 * node] >= size else 2 * node + 1
        b = node - width
        bins[i] = b
        if b + 1 > n_bins:
            n_bins = b + 1
        tree[node] -= size
        node //= 2
        while node >= 1:
            tree[node] = max(tree[2 * node], tree[2 * node + 1])
            node //= 2
    return n_bins


@numba.njit(cache=True, nogil=True)
def _best_fit(sizes: np.ndarray, capacity: int, bins: np.ndarray) -> int:
    """Best fit in the given order: open bins are bucketed by free space (a stack per value) and a
    segment tree over free-space values finds the tightest bucket that fits in O(log capacity)."""
    width = 1
    while width < capacity + 1:
        width *= 2
    # open bins per free-space value, summed up the tree
    count = np.zeros(2 * width, dtype=np.int64)
    head = np.full(capacity + 1, -1, dtype=np.int64)
    nxt = np.empty(len(sizes), dtype=np.int64)
    free = np.empty(len(sizes), dtype=np.int64)
    stack_node = np.empty(128, dtype=np.int64)  # DFS stack: depth <= 64, two pushes a level
    stack_lo = np.empty(128, dtype=np.int64)
    stack_hi = np.empty(128, dtype=np.int64)
    n_bins = 0
    for i in range(len(sizes)):
        size = sizes[i]
        # leftmost free-space value >= size with an open bin, or -1
        found = -1
        lo, node_lo, node_hi, node = size, 0, width - 1, 1
        stack_node[0], stack_lo[0], stack_hi[0] = node, node_lo, node_hi
        top = 1
        while top > 0:
            top -= 1
            node, node_lo, node_hi = stack_node[top], stack_lo[top], stack_hi[top]
            if node_hi < lo or count[node] == 0:
                continue
            if node >= width:
                found = node - width
                break
            mid = (node_lo + node_hi) // 2
            # push right first so the left child is explored first
            stack_node[top], stack_lo[top], stack_hi[top] = 2 * node + 1, mid + 1, node_hi
            top += 1
            stack_node[top], stack_lo[top], stack_hi[top] = 2 * node, node_lo, mid
            top += 1
        if found < 0:
            b = n_bins
            n_bins += 1
        else:
            b = head[found]
            head[found] = nxt[b]
            node = found + width
            while node >= 1:
                count[node] -= 1
                node //= 2
        bins[i] = b
        rest = (capacity if found < 0 else found) - size
        free[b] = rest
        nxt[b] = head[rest]
        head[rest] = b
        node = rest + width
        while node >= 1:
            count[node] += 1
            node //= 2
    return n_bins


@numba.njit(cache=True, nogil=True)
def _next_fit(sizes: np.ndarray, capacity: int, bins: np.ndarray) -> int:
    n_bins = 0
    free = 0
    for i in range(len(sizes)):
        if sizes[i] > free or n_bins == 0:
            n_bins += 1
            free = capacity
        free -= sizes[i]
        bins[i] = n_bins - 1
    return n_bins


@numba.njit(cache=True, nogil=True)
def _plan_windows(sizes: np.ndarray, capacity: int, window: int, strategy: int) -> np.ndarray:
    """Global bin id of every piece; each window of ``window`` pieces is packed on its own
    (sorted by decreasing size for ffd/bfd, in arrival order for next-fit)."""
    n = len(sizes)
    out = np.empty(n, dtype=np.int64)
    offset = 0
    for start in range(0, n, window):
        stop = min(start + window, n)
        chunk = sizes[start:stop]
        local = np.empty(stop - start, dtype=np.int64)
        if strategy == 2:
            n_bins = _next_fit(chunk, capacity, local)
            for j in range(stop - start):
                out[start + j] = offset + local[j]
        else:
            order = np.argsort(-chunk, kind="mergesort")
            sorted_sizes = chunk[order]
            if strategy == 0:
                n_bins = _first_fit(sorted_sizes, capacity, local)
            else:
                n_bins = _best_fit(sorted_sizes, capacity, local)
            for j in range(stop - start):
                out[start + order[j]] = offset + local[j]
        offset += n_bins
    return out


def split_documents(
    lengths: np.ndarray, packing_length: int, overflow: str = "split"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut documents into pieces no longer than ``packing_length``.

    Returns ``(piece_doc, piece_start, piece_length)``: ``overflow="split"`` cuts a long document
    into consecutive pieces of ``packing_length`` tokens (the last one shorter);
    ``"truncate"`` keeps its first ``packing_length`` tokens. Empty documents yield no piece.

    >>> [a.tolist() for a in split_documents(np.array([5, 0, 2]), 2)]
    [[0, 0, 0, 2], [0, 2, 4, 0], [2, 2, 1, 2]]
    """
    if overflow not in OVERFLOW:
        raise ValueError(f"overflow must be one of {OVERFLOW}, got {overflow!r}")
    if packing_length < 1:
        raise ValueError(f"packing_length must be >= 1, got {packing_length}")
    lengths = np.asarray(lengths, dtype=np.int64)
    if overflow == "truncate":
        n_pieces = (lengths > 0).astype(np.int64)
    else:
        n_pieces = -(-lengths // packing_length)
    piece_doc = np.repeat(np.arange(len(lengths), dtype=np.int64), n_pieces)
    first_piece = np.cumsum(n_pieces) - n_pieces
    piece_rank = np.arange(len(piece_doc), dtype=np.int64) - first_piece[piece_doc]
    piece_start = piece_rank * packing_length
    piece_length = np.minimum(lengths[piece_doc] - piece_start, packing_length)
    return piece_doc, piece_start, piece_length


@dataclass
class PackPlan:
    """Which document pieces go into which bin; bins are ``order[bin_splits[i]:bin_splits[i+1]]``.

    Pieces are listed by ``piece_doc`` (index into the planned documents), ``piece_start`` (token
    offset inside the document) and ``piece_length``; within a bin they keep document order.
    """

    piece_doc: np.ndarray
    piece_start: np.ndarray
    piece_length: np.ndarray
    order: np.ndarray
    bin_splits: np.ndarray
    packing_length: int

    def __len__(self) -> int:
        return len(self.bin_splits) - 1

    def bin(self, i: int) -> np.ndarray:
        """Piece indices of bin ``i``."""
        return self.order[self.bin_splits[i] : self.bin_splits[i + 1]]

    def bin_tokens(self) -> np.ndarray:
        """Tokens in each bin."""
        sums = np.zeros(len(self.order) + 1, dtype=np.int64)
        np.cumsum(self.piece_length[self.order], out=sums[1:])
        return sums[self.bin_splits[1:]] - sums[self.bin_splits[:-1]]

    def efficiency(self) -> float:
        """Real tokens / token budget over all bins (1.0 means every bin is full)."""
        if len(self) == 0:
            return 1.0
        return float(self.piece_length.sum()) / (len(self) * self.packing_length)


def plan_packs(
    lengths: np.ndarray,
    packing_length: int,
    *,
    strategy: str = "ffd",
    lookahead: int | None = None,
    overflow: str = "split",
) -> PackPlan:
    """Assign documents of the given token ``lengths`` to bins of ``packing_length`` tokens.

    ``strategy``: ``"ffd"`` first-fit-decreasing, ``"bfd"`` best-fit-decreasing (both sort each
    window of ``lookahead`` pieces by decreasing length; ``None`` packs all pieces as one window),
    ``"nf"`` next-fit in arrival order (the baseline most packers use). Documents longer than the
    budget are split or truncated (``overflow``, see :func:`split_documents`). Bins are numbered
    window by window, so a stream can emit a window's bins as soon as it is planned.

    >>> plan = plan_packs(np.array([6, 3, 5, 2]), 8, strategy="nf")
    >>> [plan.bin(i).tolist() for i in range(len(plan))], round(plan.efficiency(), 3)
    ([[0], [1, 2], [3]], 0.667)
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    piece_doc, piece_start, piece_length = split_documents(lengths, packing_length, overflow)
    n = len(piece_length)
    if lookahead is not None and lookahead < 1:
        raise ValueError(f"lookahead must be >= 1, got {lookahead}")
    window = max(n, 1) if lookahead is None else int(lookahead)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return PackPlan(piece_doc, piece_start, piece_length, empty, np.zeros(1, np.int64),
                        packing_length)
    bins = _plan_windows(piece_length, int(packing_length), window, STRATEGIES.index(strategy))
    order = np.argsort(bins, kind="stable")
    counts = np.bincount(bins)
    bin_splits = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=bin_splits[1:])
    return PackPlan(piece_doc, piece_start, piece_length, order, bin_splits, int(packing_length))


# --------------------------------------------------------------------------------------------
# Building packed batches from tokens.
# --------------------------------------------------------------------------------------------


def _as_ragged(tokens: Ragged | Sequence[Any]) -> Ragged:
    if isinstance(tokens, Ragged):
        return tokens
    return Ragged.from_rows([np.asarray(t, dtype=np.int64) for t in tokens], dtype=np.int64)


def _side_rows(column: Any, rows: np.ndarray) -> Any:
    if isinstance(column, (Ragged, torch.Tensor)):
        return column.take(rows) if isinstance(column, Ragged) else column[torch.from_numpy(rows)]
    return np.ascontiguousarray(np.asarray(column)[rows])


def build_packed_batch(
    tokens: Ragged | Sequence[Any],
    piece_doc: np.ndarray,
    piece_start: np.ndarray | None = None,
    piece_length: np.ndarray | None = None,
    *,
    side_features: Mapping[str, Any] | None = None,
    doc_ids: np.ndarray | None = None,
    packing_length: int | None = None,
) -> dict[str, Any]:
    """Concatenate the given pieces of ``tokens`` (a :class:`Ragged` of documents) into one packed
    batch (see the module docstring for the keys and the label convention).

    ``piece_doc[i]`` is the document of piece ``i``; ``piece_start`` / ``piece_length`` cut a
    piece out of it (default: whole documents). ``side_features`` are per-document columns
    (numpy, torch or :class:`Ragged`, one row per document of ``tokens``), returned one row per
    piece. ``doc_ids`` maps documents to the ids reported in ``doc_ids`` (default: their index).
    ``packing_efficiency`` is ``T / packing_length`` (1.0 without a budget).

    >>> b = build_packed_batch(Ragged.from_rows([[5, 6, 7], [8, 9]]), np.array([0, 1]))
    >>> b["input_ids"].tolist(), b["labels"].tolist(), b["position_ids"].tolist()
    ([5, 6, 7, 8, 9], [-100, 6, 7, -100, 9], [0, 1, 2, 0, 1])
    >>> b["cu_seqlens"].tolist(), b["max_seqlen"]
    ([0, 3, 5], 3)
    """
    return packed_to_torch(compact_packed_batch(
        tokens, piece_doc, piece_start, piece_length, side_features=side_features,
        doc_ids=doc_ids, packing_length=packing_length))


def compact_packed_batch(
    tokens: Ragged | Sequence[Any],
    piece_doc: np.ndarray,
    piece_start: np.ndarray | None = None,
    piece_length: np.ndarray | None = None,
    *,
    side_features: Mapping[str, Any] | None = None,
    doc_ids: np.ndarray | None = None,
    packing_length: int | None = None,
) -> dict[str, Any]:
    """:func:`build_packed_batch`'s batch in :func:`packed_to_numpy`'s compact form (what a
    DataLoader worker sends; :func:`packed_to_torch` completes it)."""
    tokens = _as_ragged(tokens)
    piece_doc = np.asarray(piece_doc, dtype=np.int64)
    doc_lengths = tokens.row_lengths()
    if piece_start is None:
        piece_start = np.zeros(len(piece_doc), dtype=np.int64)
    if piece_length is None:
        piece_length = doc_lengths[piece_doc] - piece_start
    piece_start = np.asarray(piece_start, dtype=np.int64)
    piece_length = np.asarray(piece_length, dtype=np.int64)
    if np.any(piece_start + piece_length > doc_lengths[piece_doc]):
        raise ValueError("a piece reaches past the end of its document")

    cu = np.zeros(len(piece_doc) + 1, dtype=np.int64)
    np.cumsum(piece_length, out=cu[1:])
    total = int(cu[-1])
    index = np.repeat(tokens.row_splits[piece_doc] + piece_start - cu[:-1], piece_length)
    ids = piece_doc if doc_ids is None else np.asarray(doc_ids, dtype=np.int64)[piece_doc]
    batch = {
        "input_ids": np.asarray(tokens.values[index + np.arange(total)], dtype=np.int64),
        "cu_seqlens": cu.astype(np.int32),
        "doc_ids": np.ascontiguousarray(ids, dtype=np.int64),
        "doc_offsets": piece_start,
        "packing_efficiency": 1.0 if packing_length is None else total / packing_length,
    }
    for name, column in (side_features or {}).items():
        if name in batch or name in _DERIVED:
            raise ValueError(f"side feature {name!r} clashes with a packed-batch key")
        batch[name] = _side_rows(column, piece_doc)
    return batch


def _assemble(input_ids: np.ndarray, cu: np.ndarray, doc_ids: np.ndarray,
              doc_offsets: np.ndarray, efficiency: float) -> dict[str, Any]:
    """The packed batch of ``input_ids`` cut at ``cu``: labels and positions follow from those."""
    cu = np.asarray(cu, dtype=np.int64)
    lengths = np.diff(cu)
    positions = np.arange(cu[-1], dtype=np.int64) - np.repeat(cu[:-1], lengths)
    labels = input_ids.copy()
    labels[cu[:-1][lengths > 0]] = IGNORE_INDEX
    cu_seqlens = torch.from_numpy(cu.astype(np.int32))
    max_seqlen = int(lengths.max()) if len(lengths) else 0
    return {
        "input_ids": torch.from_numpy(input_ids),
        "labels": torch.from_numpy(labels),
        "position_ids": torch.from_numpy(positions),
        "cu_seqlens": cu_seqlens,
        "max_seqlen": max_seqlen,
        "doc_ids": torch.from_numpy(np.ascontiguousarray(doc_ids, dtype=np.int64)),
        "doc_offsets": torch.from_numpy(np.ascontiguousarray(doc_offsets, dtype=np.int64)),
        "num_tokens": int(cu[-1]),
        "packing_efficiency": float(efficiency),
        "cu_seq_lens_q": cu_seqlens,
        "cu_seq_lens_k": cu_seqlens,
        "max_length_q": max_seqlen,
        "max_length_k": max_seqlen,
    }


_CORE = ("input_ids", "cu_seqlens", "doc_ids", "doc_offsets", "packing_efficiency")
_DERIVED = ("labels", "position_ids", "max_seqlen", "num_tokens", "cu_seq_lens_q", "cu_seq_lens_k",
            "max_length_q", "max_length_k")


def packed_to_numpy(batch: Mapping[str, Any]) -> dict[str, Any]:
    """A compact picklable form of a packed batch: numpy arrays instead of tensors and without
    what :func:`packed_to_torch` derives again (labels, positions, lengths). A DataLoader worker
    moves each tensor through its own shared-memory file, which costs more than pickling a few
    KiB, and half the bytes are derived anyway."""
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v
            for k, v in batch.items() if k not in _DERIVED}


def packed_to_torch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`packed_to_numpy`."""
    out = _assemble(*(batch[k] for k in _CORE))
    for k, v in batch.items():
        if k not in out:
            out[k] = torch.from_numpy(v) if isinstance(v, np.ndarray) and v.dtype.kind in "biuf" \
                else v
    return out


def pack_documents(
    tokens: Ragged | Sequence[Any],
    packing_length: int,
    *,
    side_features: Mapping[str, Any] | None = None,
    doc_ids: np.ndarray | None = None,
    strategy: str = "ffd",
    lookahead: int | None = None,
    overflow: str = "split",
) -> list[dict[str, Any]]:
    """Plan and build all packed batches of a set of documents (at most ``packing_length`` tokens
    each, no padding).

    >>> batches = pack_documents([[1, 2, 3], [4, 5, 6, 7, 8], [9, 10]], packing_length=5)
    >>> [b["input_ids"].tolist() for b in batches]
    [[4, 5, 6, 7, 8], [1, 2, 3, 9, 10]]
    """
    tokens = _as_ragged(tokens)
    plan = plan_packs(tokens.row_lengths(), packing_length, strategy=strategy,
                      lookahead=lookahead, overflow=overflow)
    return [batch_from_plan(tokens, plan, i, side_features=side_features, doc_ids=doc_ids)
            for i in range(len(plan))]


def batch_from_plan(tokens: Ragged, plan: PackPlan, i: int, *,
                    side_features: Mapping[str, Any] | None = None,
                    doc_ids: np.ndarray | None = None) -> dict[str, Any]:
    """The packed batch of bin ``i`` of ``plan`` (planned over ``tokens.row_lengths()``)."""
    pieces = plan.bin(i)
    return build_packed_batch(tokens, plan.piece_doc[pieces], plan.piece_start[pieces],
                              plan.piece_length[pieces], side_features=side_features,
                              doc_ids=doc_ids, packing_length=plan.packing_length)


def flatten_documents(
    tokens: Ragged | Sequence[Any],
    *,
    side_features: Mapping[str, Any] | None = None,
    doc_ids: np.ndarray | None = None,
) -> dict[str, Any]:
    """Whole-batch flattening: every document concatenated into one packed batch (no budget),
    like HuggingFace's ``DataCollatorWithFlattening``; empty documents are left out."""
    tokens = _as_ragged(tokens)
    docs = np.flatnonzero(tokens.row_lengths() > 0)
    return build_packed_batch(tokens, docs, side_features=side_features, doc_ids=doc_ids)


def collate_flattened(examples: Sequence[Mapping[str, Any]], token_key: str = "input_ids"
                      ) -> dict[str, Any]:
    """A DataLoader ``collate_fn`` over a list of per-example dicts: flattens ``token_key`` of
    every example and passes the other keys through as per-document side features."""
    tokens = Ragged.from_rows([np.asarray(e[token_key], dtype=np.int64) for e in examples],
                              dtype=np.int64)
    side = {k: np.asarray([e[k] for e in examples]) for k in examples[0] if k != token_key}
    return flatten_documents(tokens, side_features=side)


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Targets aligned with logits: ``targets[t] = labels[t + 1]``, ``-100`` at the end.

    Use ``cross_entropy(logits, shift_labels(labels), ignore_index=-100)`` for a model that does
    not shift labels itself; the -100 at each document's first token keeps the loss inside
    documents.
    """
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[..., :-1] = labels[..., 1:]
    return targets


def hf_kwargs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for a HuggingFace causal LM on a packed batch, safe for every attention
    implementation (``model(**hf_kwargs(batch))``).

    ``input_ids``/``labels``/``position_ids`` get the batch dimension (``[1, T]``);
    ``cu_seq_lens_q/k`` and ``max_length_q/k`` are the boundaries flash-attention's varlen path
    reads. Eager, sdpa and flex attention instead derive the block-diagonal mask from
    ``position_ids``, and transformers does that only when there is no 2-D ``attention_mask`` and
    no KV cache; ``use_cache`` defaults to the config's (true for Llama, Qwen2, Mistral), so
    without ``use_cache=False`` every document attends to the ones before it. Hence no
    ``attention_mask`` key and ``use_cache=False``. The keys are those of transformers'
    ``DataCollatorWithFlattening(return_flash_attn_kwargs=True)`` plus ``use_cache``.

    >>> kw = hf_kwargs(flatten_documents([[1, 2], [3, 4, 5]]))
    >>> kw["position_ids"].tolist(), kw["cu_seq_lens_q"].tolist(), kw["use_cache"]
    ([[0, 1, 0, 1, 2]], [0, 2, 5], False)
    """
    # a batch may carry the boundaries under shardforge's names only (cu_seqlens, max_seqlen)
    cu = batch["cu_seq_lens_q"] if "cu_seq_lens_q" in batch else batch["cu_seqlens"]
    cu = torch.as_tensor(cu, dtype=torch.int32)
    max_length = int(batch["max_length_q"] if "max_length_q" in batch else batch["max_seqlen"])
    return {
        "input_ids": torch.as_tensor(batch["input_ids"])[None],
        "labels": torch.as_tensor(batch["labels"])[None],
        "position_ids": torch.as_tensor(batch["position_ids"])[None],
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": max_length,
        "max_length_k": max_length,
        "use_cache": False,
    }


# --------------------------------------------------------------------------------------------
# The text packer: what ShardDataset hands each window of documents to.
# --------------------------------------------------------------------------------------------


def spec_for(token_feature: str, side_features: Sequence[str], spec: Spec) -> Spec:
    """The part of ``spec`` a packer decodes (tokens must be int64 values)."""
    tokens = spec.get(token_feature)
    if tokens is None:
        raise KeyError(f"token feature {token_feature!r} is not in the spec ({sorted(spec)})")
    if isinstance(tokens, FixedLen) and tokens.dtype == "int64":
        tokens = VarLen("int64")
    if not isinstance(tokens, VarLen) or tokens.dtype != "int64":
        raise TypeError(f"token feature {token_feature!r} must be int64 values, got {tokens}")
    missing = [name for name in side_features if name not in spec]
    if missing:
        raise KeyError(f"side features {missing} are not in the spec ({sorted(spec)})")
    return {token_feature: tokens, **{name: spec[name] for name in side_features}}


def consumed_documents(plan: PackPlan | Any, items: int, n_docs: int) -> np.ndarray:
    """Which of a window's ``n_docs`` documents the first ``items`` bins of ``plan`` hold
    entirely (bool per document). A split document whose first pieces were consumed counts as
    not consumed (read again in full on resume: tokens may repeat, none is lost); an empty
    document has no piece and is consumed with the window's first bin."""
    consumed = np.zeros(len(plan.piece_doc), dtype=bool)
    consumed[plan.order[: plan.bin_splits[items]]] = True
    pieces_left = np.bincount(plan.piece_doc[~consumed], minlength=n_docs)
    has_pieces = np.bincount(plan.piece_doc, minlength=n_docs) > 0
    return (pieces_left == 0) & (has_pieces | (items > 0))


@dataclass
class TextWindow:
    """One planned window of documents (``plan`` is ``None`` when flattening)."""

    tokens: Ragged
    side: dict[str, Any]
    doc_ids: np.ndarray
    plan: PackPlan | None

    def __len__(self) -> int:
        if self.plan is None:
            return int(self.tokens.row_lengths().sum() > 0)
        return len(self.plan)


@dataclass(frozen=True)
class TextPacker:
    """Packed, padding-free token batches for
    :class:`~shardforge.training.dataset.ShardDataset`: each window of ``lookahead`` documents
    (records, in the dataset's shuffled order) is planned into bins of ``packing_length`` tokens
    and read bin by bin. ``packing_length=None`` flattens each window into one batch instead
    (HuggingFace's ``DataCollatorWithFlattening``: ``lookahead`` documents per batch).

    ``token_feature``: the int64 token ids of each record; ``side_features``: per-document
    features carried along (one row per document of the batch); ``strategy`` ``"ffd"`` /
    ``"bfd"`` / ``"nf"`` and ``overflow`` ``"split"`` / ``"truncate"`` as in
    :func:`plan_packs`.

    >>> ds = ShardDataset("out/train", packer=TextPacker(packing_length=4096))  # doctest: +SKIP
    """

    packing_length: int | None = 4096
    token_feature: str = "tokens"
    side_features: Sequence[str] = ()
    strategy: str = "ffd"
    lookahead: int = 4096
    overflow: str = "split"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.overflow not in OVERFLOW:
            raise ValueError(f"overflow must be one of {OVERFLOW}, got {self.overflow!r}")
        if self.packing_length is not None and self.packing_length < 1:
            raise ValueError(f"packing_length must be >= 1, got {self.packing_length}")
        if self.lookahead < 1:
            raise ValueError(f"lookahead must be >= 1, got {self.lookahead}")

    def bind(self, schema: Schema | Spec) -> TextPacker:
        """Nothing to take from the job's schema: the packer as it is."""
        return self

    def features(self, spec: Spec) -> Spec:
        """The token feature (as int64 values) and the side features."""
        return spec_for(self.token_feature, self.side_features, spec)

    def layout(self) -> dict:
        """The settings that decide how a window is cut into batches."""
        return {"packing_length": self.packing_length, "strategy": self.strategy,
                "overflow": self.overflow}

    def plan(self, docs: Batch, doc_ids: np.ndarray, layout: Mapping[str, Any]) -> TextWindow:
        """Bins of one window of decoded documents under ``layout``."""
        tokens = docs[self.token_feature]
        side = {name: column for name, column in docs.items() if name != self.token_feature}
        plan = None
        if layout["packing_length"] is not None:
            plan = plan_packs(tokens.row_lengths(), layout["packing_length"],
                              strategy=layout["strategy"], overflow=layout["overflow"])
        return TextWindow(tokens, side, doc_ids, plan)

    def batch(self, window: TextWindow, i: int) -> dict[str, Any]:
        """Batch ``i`` of ``window``, compact (:func:`packed_to_numpy`'s form)."""
        if window.plan is None:
            docs = np.flatnonzero(window.tokens.row_lengths() > 0)
            return compact_packed_batch(window.tokens, docs, side_features=window.side,
                                        doc_ids=window.doc_ids)
        plan, pieces = window.plan, window.plan.bin(i)
        return compact_packed_batch(window.tokens, plan.piece_doc[pieces],
                                    plan.piece_start[pieces], plan.piece_length[pieces],
                                    side_features=window.side, doc_ids=window.doc_ids,
                                    packing_length=plan.packing_length)

    def consumed(self, window: TextWindow, items: int) -> np.ndarray:
        """Documents the first ``items`` batches of ``window`` hold entirely."""
        if window.plan is None:
            return np.full(len(window.doc_ids), items > 0)
        return consumed_documents(window.plan, items, len(window.doc_ids))

    def to_torch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The packed batch (module docstring) from :meth:`batch`'s compact form."""
        return packed_to_torch(batch)


# --------------------------------------------------------------------------------------------
# Moving between padded [B, L] + attention_mask and the packed form.
# --------------------------------------------------------------------------------------------


def unpad_input(
    hidden: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Drop padding: ``hidden [B, L, ...]`` and ``attention_mask [B, L]`` (1 = real token) to
    ``(hidden [T, ...], indices [T], cu_seqlens int32 [B + 1], max_seqlen)``, where ``indices``
    are positions in the flattened ``[B * L]`` layout (flash-attention's ``unpad_input``).
    Real tokens need not be left-aligned; each row becomes one document.
    """
    mask = attention_mask.bool()
    seqlens = mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
    cu_seqlens = torch.zeros(len(seqlens) + 1, dtype=torch.int32, device=hidden.device)
    cu_seqlens[1:] = torch.cumsum(seqlens, dim=0)
    max_seqlen = int(seqlens.max()) if len(seqlens) else 0
    flat = hidden.reshape(-1, *hidden.shape[2:])
    return flat[indices], indices, cu_seqlens, max_seqlen


def pad_input(hidden: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int,
              pad_value: float = 0) -> torch.Tensor:
    """Inverse of :func:`unpad_input`: scatter ``hidden [T, ...]`` back to ``[batch, seqlen, ...]``
    with ``pad_value`` at the padding positions."""
    out = hidden.new_full((batch * seqlen, *hidden.shape[1:]), pad_value)
    out[indices] = hidden
    return out.reshape(batch, seqlen, *hidden.shape[1:])


def packed_from_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
    """A packed batch (module docstring) from a padded ``[B, L]`` batch, one document per row;
    ``indices`` (into ``[B * L]``) is added so outputs can be padded back with :func:`pad_input`."""
    flat_ids, indices, cu, _ = unpad_input(input_ids, attention_mask)
    rows = np.arange(len(cu) - 1, dtype=np.int64)
    batch = _assemble(flat_ids.to(torch.int64).numpy().copy(), cu.numpy(), rows,
                      np.zeros_like(rows), 1.0)
    batch["indices"] = indices
    return batch
