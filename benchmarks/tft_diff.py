"""Differential check: many small ``preprocessing_fn`` outputs through tf.Transform and the
equivalent shardforge columns, over adversarial data, every output row compared.

    .venv/bin/python benchmarks/tft_diff.py --tft-python /tmp/tftvenv/bin/python

The data sets (``datasets()``) hold vocabulary ties at a ``top_k`` cut and counts equal to a
``frequency_threshold``, int64 values whose decimal strings order differently from their values,
empty / whitespace-only / unicode strings, VarLen string / int / optional-float lists, constant,
heavily duplicated and large-offset floats, 1 to 7 rows with more buckets than distinct values,
a 20k-row Zipf set; 89 outputs each (vocabularies, split / ngrams / lower / strip /
regex_replace, hashes, crosses, z-score / 0-1 / min-max scaling, bucketize, apply_buckets,
present-only statistics; and since issue 23 tf-idf, bag of words, word count, dedup, keyed
hash, per-key and elementwise scaling and buckets, interpolated buckets, int64 buckets past
2**24, weighted / mutual-information / coverage vocabularies, PCA, density, Gaussianization and
broadcast sum / covariance / Tukey parameters). ``--only a,b`` computes and compares just those
outputs. Each output is computed by tf.Transform 1.21
(``AnalyzeAndTransformDataset`` on the DirectRunner, in the Python given by ``--tft-python``)
and by a shardforge ``FeatureSet`` fitted in-process; ids must be equal, floats within 1e-6
relative. A learned bucketization that differs is not counted when shardforge's ids are those of
the exact quantiles (tf.Transform's sketch has eps = 0.01; per key and per element position
too), nor a z-score when shardforge's is
within 1e-6 of the float64 one (tf.Transform computes mean and variance in float32). Prints one
line per output (``--show`` rows of each difference) and exits 1 on any other difference.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile

import numpy as np

KINDS = {"s": "bytes", "u": "bytes", "i": "int64", "words": "bytes", "f_neg": "float32",
         "f_const": "float32", "f_dup": "float32", "f_int": "int64", "f_big": "float32",
         "f_huge": "int64", "lab": "int64"}
VARLEN = {"tags": "bytes", "itags": "int64", "opt": "float32"}  # VarLenFeature inputs: a list a row


def datasets() -> dict[str, dict[str, list]]:
    rng = np.random.default_rng(7)
    # counts: ties at every top_k cut tried (3, 4, 5) and at the thresholds (7, 12)
    counts = {"b": 12, "a": 12, "c": 12, "d": 7, "e": 7, "D": 7, "z": 5, "y": 5, "é": 5,
              "日本": 4, "ab": 4, "a b": 3, " ": 7, "  ": 2, "": 9, "\t": 2, "x\ny": 3,
              "Z": 1, "aa": 1, "a ": 2, "\r": 2, "\x00": 2, "a\rb": 7}
    s = [k for k, c in counts.items() for _ in range(c)]
    ints = {9: 10, 10: 10, 100: 10, -1: 10, 99: 6, 1000: 6, 0: 6, -10: 3, 5: 3, 50: 1}
    i = [k for k, c in ints.items() for _ in range(c)]
    words_pool = ["a b", "a  b", " a", "b ", "", " ", "c\td", "é é", "x y z", "y z",
                  "\u00a0q", "a\nb", "b a c a"]
    n = len(s)
    perm = rng.permutation(n)
    s = [s[j] for j in perm]
    a = {"s": s, "u": [["日本", "é", "e", "E", "\u00e9", "é"][j % 6] for j in range(n)],
         "i": [i[j % len(i)] for j in rng.permutation(n)],
         "words": [words_pool[j] for j in rng.integers(0, len(words_pool), n)],
         "f_neg": (rng.normal(-3, 5, n)).astype(np.float32).tolist(),
         "f_const": [3.5] * n,
         "f_dup": rng.choice([0.0, -0.0, 1.0, 2.0, -1.5], n,
                             p=[0.4, 0.3, 0.2, 0.05, 0.05]).tolist(),
         "f_int": rng.integers(-5, 60, n).tolist(),
         "f_big": (1e4 + rng.normal(0, 1, n)).astype(np.float32).tolist()}
    few = {"s": ["q", "p", "q", "", "r", "p", "q"], "u": ["a"] * 7,
           "i": [3, 1, 2, 3, 1, 3, 7], "words": ["a", "b c", "", "c", " ", "a a", "b"],
           "f_neg": [-2.0, 5.0, 1.0, 1.0, 0.5, -7.0, 3.0], "f_const": [-1.0] * 7,
           "f_dup": [1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0], "f_int": [1, 2, 3, 4, 5, 6, 7],
           "f_big": [1e6, 1e6 + 1, 1e6, 1e6, 1e6 + 0.5, 1e6, 1e6]}
    empty = {"s": [""] * 5, "u": [" "] * 5, "i": [0] * 5, "words": ["", " ", "", "  ", ""],
             "f_neg": [0.0] * 5, "f_const": [2.0] * 5, "f_dup": [0.0] * 5, "f_int": [0] * 5,
             "f_big": [-1e9] * 5}
    one = {"s": ["x"], "u": [""], "i": [12], "words": ["p q p"], "f_neg": [-4.0],
           "f_const": [1.0], "f_dup": [0.0], "f_int": [7], "f_big": [3e9]}
    big_dup = rng.choice([0.0, 1.0, 2.0, 3.0, 10.0], 3000, p=[0.5, 0.3, 0.1, 0.05, 0.05])
    big = {"s": rng.choice([f"k{j}" for j in range(40)], 3000).tolist(),
           "u": ["x"] * 3000, "i": rng.integers(0, 30, 3000).tolist(),
           "words": [f"w{j % 7} w{j % 11}" for j in range(3000)],
           "f_neg": rng.standard_cauchy(3000).astype(np.float32).tolist(),
           "f_const": [0.0] * 3000, "f_dup": big_dup.tolist(),
           "f_int": rng.zipf(1.5, 3000).clip(0, 10**6).tolist(),
           "f_big": (1e7 + rng.normal(0, 3, 3000)).astype(np.float32).tolist()}
    nz = 20000
    zipf = {"s": [f"z{v}" for v in rng.zipf(1.3, nz) % 3000],
            "u": [["a", "b", "c"][j % 3] for j in range(nz)],
            "i": (rng.zipf(1.2, nz) % 5000 - 50).tolist(),
            "words": [" ".join(f"q{v}" for v in rng.zipf(1.5, k) % 500)
                      for k in rng.integers(0, 6, nz)],
            "f_neg": rng.normal(0, 1, nz).astype(np.float32).tolist(),
            "f_const": [7.0] * nz, "f_dup": rng.integers(0, 3, nz).astype(float).tolist(),
            "f_int": rng.integers(0, 100, nz).tolist(),
            "f_big": rng.lognormal(3, 1, nz).astype(np.float32).tolist()}
    out = {"adversarial": a, "few": few, "big": big, "empty": empty, "one": one, "zipf": zipf}
    pool = ["t", "u", "", " ", "t", "é", "v"]
    for cols in out.values():
        n = len(cols["s"])
        lens = rng.integers(0, 4, n)
        cols["tags"] = [[pool[j] for j in rng.integers(0, len(pool), k)] for k in lens]
        cols["itags"] = [rng.integers(-3, 12, k).tolist() for k in lens]
        # an optional float (VarLenFeature with 0 or 1 value): present_only columns
        cols["opt"] = [[float(np.float32(v))] if v > -1.0 else [] for v in rng.normal(1, 2, n)]
        # integers past float32's exact range (2**24), around integer bucket boundaries
        cols["f_huge"] = [v * 1_000_000 - 1_000_000 for v in cols["f_int"]]
        cols["lab"] = [v % 3 for v in cols["f_int"]]  # label ids for mutual information
        cols["vec"] = [[a, b] for a, b in zip(cols["f_neg"], cols["f_dup"])]  # a [2] float
    return out


# --------------------------------------------------------------------------- tf.Transform side


def tft_outputs(inputs):
    import tensorflow as tf
    import tensorflow_transform as tft

    cav = tft.compute_and_apply_vocabulary
    words = tf.strings.split(inputs["words"], sep=" ")
    ws = tf.strings.split(inputs["words"])
    opt = tf.sparse.reset_shape(inputs["opt"], [tf.shape(inputs["s"], tf.int64)[0], 1])
    return {
        "v_all": cav(inputs["s"]),
        "v_top3": cav(inputs["s"], top_k=3),
        "v_top4_def": cav(inputs["s"], top_k=4, default_value=-7),
        "v_top5_oov": cav(inputs["s"], top_k=5, num_oov_buckets=3),
        "v_thr7": cav(inputs["s"], frequency_threshold=7),
        "v_thr12_top2": cav(inputs["s"], frequency_threshold=12, top_k=2),
        "v_thr1": cav(inputs["s"], frequency_threshold=1),
        "v_none": cav(inputs["s"], frequency_threshold=10**6),
        "v_none_oov": cav(inputs["s"], frequency_threshold=10**6, num_oov_buckets=2),
        "vi_none_oov": cav(inputs["i"], frequency_threshold=10**6, num_oov_buckets=2),
        "v_uni": cav(inputs["u"]),
        "vi_all": cav(inputs["i"]),
        "vi_top3": cav(inputs["i"], top_k=3),
        "vi_top2_oov": cav(inputs["i"], top_k=2, num_oov_buckets=2),
        "vi_thr6": cav(inputs["i"], frequency_threshold=6),
        "v_split": cav(words, top_k=6, num_oov_buckets=1).to_sparse(),
        "v_wsplit": cav(ws, num_oov_buckets=2).to_sparse(),
        "split": words.to_sparse(),
        "wsplit": ws.to_sparse(),
        "ngrams": tf.strings.ngrams(words, (1, 2)).to_sparse(),
        "hash": tf.strings.to_hash_bucket_fast(inputs["s"], 17),
        "tft_hash": tft.hash_strings(inputs["s"], 17),
        "tft_ngrams": tft.ngrams(words.to_sparse(), (1, 2), " "),
        "cross": tf.sparse.cross_hashed([inputs["s"][:, None], inputs["i"][:, None]], 50),
        "cross_tags": tf.sparse.cross_hashed([inputs["tags"], inputs["s"][:, None]], 40),
        "v_tags": cav(inputs["tags"], top_k=3, num_oov_buckets=1),
        "v_itags": cav(inputs["itags"], top_k=4),
        "h_tags": tf.sparse.SparseTensor(inputs["tags"].indices, tf.strings.to_hash_bucket_fast(
            inputs["tags"].values, 9), inputs["tags"].dense_shape),
        "v_top100": cav(inputs["s"], top_k=100, num_oov_buckets=5),
        "v_lower_text": cav(tf.strings.split(tf.strings.lower(inputs["words"])), top_k=5,
                            num_oov_buckets=1).to_sparse(),
        "strip_lower": tf.strings.lower(tf.strings.strip(inputs["words"])),
        "rr": tf.strings.regex_replace(inputs["words"], r"\s+", "_"),
        # present only: analyze the VarLenFeature's values, then fill the missing rows
        "z_opt": tf.sparse.to_dense(tft.scale_to_z_score(opt), default_value=(
            0.0 - tft.mean(opt.values)) / tf.sqrt(tft.var(opt.values)))[:, 0],
        "b_opt": tft.apply_buckets(tf.sparse.to_dense(opt, 0.0)[:, 0],
                                   tft.quantiles(opt.values, 5, 0.01)),
        "join_hash": tf.strings.to_hash_bucket_fast(inputs["s"] + "_" + tf.strings.as_string(
            tft.bucketize(inputs["f_int"], 4)), 100),
        "clip": tf.clip_by_value(inputs["f_neg"], -2.0, 3.0),
        "mm_neg": tft.scale_by_min_max(inputs["f_neg"], -1.0, 1.0),
        "mm_const": tft.scale_by_min_max(inputs["f_const"], 2.0, 5.0),
        "z_neg": tft.scale_to_z_score(inputs["f_neg"]),
        "z_const": tft.scale_to_z_score(inputs["f_const"]),
        "z_int": tft.scale_to_z_score(inputs["f_int"]),
        "z_dup": tft.scale_to_z_score(inputs["f_dup"]),
        "z_big": tft.scale_to_z_score(inputs["f_big"]),
        "m01_big": tft.scale_to_0_1(inputs["f_big"]),
        "b_big5": tft.bucketize(inputs["f_big"], 5),
        "m01_neg": tft.scale_to_0_1(inputs["f_neg"]),
        "m01_const": tft.scale_to_0_1(inputs["f_const"]),
        "m01_int": tft.scale_to_0_1(inputs["f_int"]),
        "b_neg7": tft.bucketize(inputs["f_neg"], 7),
        "b_dup10": tft.bucketize(inputs["f_dup"], 10),
        "b_const5": tft.bucketize(inputs["f_const"], 5),
        "b_int4": tft.bucketize(inputs["f_int"], 4),
        "b_int30": tft.bucketize(inputs["f_int"], 30),
        "ab": tft.apply_buckets(inputs["f_neg"], tf.constant([[-1.0, 0.0, 1.0]])),
        "ab_int": tft.apply_buckets(inputs["f_int"], tf.constant([[0, 5, 10]], tf.int64)),
        **tft_more_outputs(inputs, words, ws),
    }


def tft_more_outputs(inputs, words, ws):
    """The mappers beyond the feature-column set (issue 23): tf-idf, bag of words, keyed hash,
    per-key scaling, interpolated buckets, integer buckets past float32's precision."""
    import tensorflow as tf
    import tensorflow_transform as tft

    hashed = tf.ragged.map_flat_values(tf.strings.to_hash_bucket_fast, ws, 30).to_sparse()
    tf_idx, tf_w = tft.tfidf(hashed, 30)
    tf_idx_ns, tf_w_ns = tft.tfidf(hashed, 30, smooth=False)
    return {
        "tfidf_index": tf_idx,
        "tfidf_weight": tf_w,
        "tfidf_index_ns": tf_idx_ns,
        "tfidf_weight_ns": tf_w_ns,
        "bow": tft.bag_of_words(words.to_sparse(), (1, 2), " "),
        "bow_13": tft.bag_of_words(ws.to_sparse(), (1, 3), "_"),
        "word_count": tft.word_count(words),
        "dedup_tags": tft.deduplicate_tensor_per_row(inputs["tags"]),
        "dedup_itags": tft.deduplicate_tensor_per_row(inputs["itags"]),
        "hash_key": tft.hash_strings(inputs["s"], 17, key=[123, 456]),
        "hash_key_tags": tft.hash_strings(inputs["tags"], 1000, key=[-5, 2**40]),
        "z_pk": tft.scale_to_z_score_per_key(inputs["f_neg"], inputs["u"]),
        "m01_pk": tft.scale_to_0_1_per_key(inputs["f_dup"], inputs["s"]),
        "mm_pk": tft.scale_by_min_max_per_key(inputs["f_int"], inputs["u"], -1.0, 1.0),
        "interp": tft.apply_buckets_with_interpolation(inputs["f_neg"],
                                                       [[-3.0, 0.0, 0.5, 4.0]]),
        "interp_dup": tft.apply_buckets_with_interpolation(
            inputs["f_dup"], tft.quantiles(inputs["f_dup"], 4, 0.01)),
        "v_weighted": tft.compute_and_apply_vocabulary(inputs["s"], weights=inputs["f_dup"],
                                                       top_k=6, num_oov_buckets=1),
        "v_mi": tft.compute_and_apply_vocabulary(inputs["s"], labels=inputs["lab"], top_k=8,
                                                 num_oov_buckets=1),
        "v_ami": tft.compute_and_apply_vocabulary(inputs["s"], labels=inputs["lab"],
                                                  use_adjusted_mutual_info=True,
                                                  min_diff_from_avg=0.0, top_k=8),
        "v_cov": tft.compute_and_apply_vocabulary(
            inputs["s"], top_k=2, coverage_top_k=1,
            key_fn=lambda v: v[:1], default_value=-9),
        "b_pk": tft.bucketize_per_key(inputs["f_neg"], inputs["u"], 4),
        "z_ew": tft.scale_to_z_score(inputs["vec"], elementwise=True),
        "mm_ew": tft.scale_by_min_max(inputs["vec"], -1.0, 1.0, elementwise=True),
        "b_ew": tft.bucketize(inputs["vec"], 3, elementwise=True),
        "pca": tf.matmul(inputs["vec"], tft.pca(inputs["vec"], 2, tf.float32)),
        "dens": tft.estimated_probability_density(inputs["f_dup"], [-2.0, -1.0, 0.0, 1.0, 2.0,
                                                                    3.0]),
        "dens_cat": tft.estimated_probability_density(inputs["s"], categorical=True),
        "gauss": tft.scale_to_gaussian(inputs["f_neg"]),
        "gauss_big": tft.scale_to_gaussian(inputs["f_big"]),
        # analyzers, broadcast to every row
        "sum": tft.sum(inputs["f_neg"]) + 0.0 * inputs["f_neg"],
        "cov01": tft.covariance(inputs["vec"], tf.float32)[0, 1] + 0.0 * inputs["f_neg"],
        "tukey_scale": tft.tukey_scale(inputs["f_neg"]) + 0.0 * inputs["f_neg"],
        "tukey_hr": tft.tukey_h_params(inputs["f_neg"])[1] + 0.0 * inputs["f_neg"],
        "ab_big": tft.apply_buckets(inputs["f_huge"], tf.constant(
            [[0, 5_000_001, 10_000_001, 50_000_001]], tf.int64)),
    }


def run_tft(in_path: str, out_path: str, only: str = "") -> None:
    import tensorflow as tf
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    kinds = {"bytes": tf.string, "int64": tf.int64, "float32": tf.float32}
    spec = {k: tf.io.FixedLenFeature([], kinds[v]) for k, v in KINDS.items()}
    spec.update({k: tf.io.VarLenFeature(kinds[v]) for k, v in VARLEN.items()})
    spec["vec"] = tf.io.FixedLenFeature([2], tf.float32)
    spec["row"] = tf.io.FixedLenFeature([], tf.int64)
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))

    def fn(inputs):
        out = tft_outputs(inputs)
        if only:
            out = {k: v for k, v in out.items() if k in only.split(",")}
        out["row"] = inputs["row"]
        return out

    with open(in_path, "rb") as f:
        data = pickle.load(f)
    result = {}
    for name, cols in data.items():
        n = len(cols["s"])
        rows = [{"row": r, **{k: (cols[k][r].encode() if KINDS[k] == "bytes" else cols[k][r])
                              for k in KINDS},
                 "tags": [t.encode() for t in cols["tags"][r]], "itags": cols["itags"][r],
                 "opt": cols["opt"][r], "vec": cols["vec"][r]}
                for r in range(n)]
        with tempfile.TemporaryDirectory() as tmp, tft_beam.Context(temp_dir=tmp):
            (out, _), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
                fn, output_record_batches=False)
        out = sorted(out, key=lambda r: int(r["row"]))
        result[name] = {k: [r[k] for r in out] for k in out[0] if k != "row"}
    with open(out_path, "wb") as f:
        pickle.dump(result, f)


# --------------------------------------------------------------------------- shardforge side


def sf_feature_set():
    import shardforge.features as sf

    cv = sf.categorical_vocab
    words = sf.split("words", sep=" ", name="split")
    ws = sf.split("words", name="wsplit")
    i = dict(dtype="int64", default=0)
    tags = sf.categorical_hash("tags", 9, multivalued=True, name="h_tags")
    cols = [
        cv("s", name="v_all"),
        cv("s", top_k=3, name="v_top3"),
        cv("s", top_k=4, default_value=-7, name="v_top4_def"),
        cv("s", top_k=5, num_oov_buckets=3, name="v_top5_oov"),
        cv("s", frequency_threshold=7, name="v_thr7"),
        cv("s", frequency_threshold=12, top_k=2, name="v_thr12_top2"),
        cv("s", frequency_threshold=1, name="v_thr1"),
        cv("s", frequency_threshold=10**6, name="v_none"),
        cv("s", frequency_threshold=10**6, num_oov_buckets=2, name="v_none_oov"),
        cv("i", frequency_threshold=10**6, num_oov_buckets=2, name="vi_none_oov", **i),
        cv("u", name="v_uni"),
        cv("i", name="vi_all", **i),
        cv("i", top_k=3, name="vi_top3", **i),
        cv("i", top_k=2, num_oov_buckets=2, name="vi_top2_oov", **i),
        cv("i", frequency_threshold=6, name="vi_thr6", **i),
        cv(words, top_k=6, num_oov_buckets=1, name="v_split"),
        cv(ws, num_oov_buckets=2, name="v_wsplit"),
        words,
        ws,
        sf.ngrams(words, (1, 2), name="ngrams"),
        sf.ngrams(words, (1, 2), name="tft_ngrams", order="position"),
        sf.categorical_hash("s", 17, name="hash"),
        sf.categorical_hash("s", 17, name="tft_hash"),
        sf.numeric("f_neg", default=0.0, normalize="zscore", name="z_neg"),
        sf.numeric("f_const", default=0.0, normalize="zscore", name="z_const"),
        sf.numeric("f_int", normalize="zscore", name="z_int", **i),
        sf.numeric("f_dup", default=0.0, normalize="zscore", name="z_dup"),
        sf.numeric("f_big", default=0.0, normalize="zscore", name="z_big"),
        sf.numeric("f_big", default=0.0, normalize="minmax", name="m01_big"),
        sf.bucketized(sf.numeric("f_big", default=0.0), num_buckets=5, name="b_big5"),
        sf.numeric("f_neg", default=0.0, normalize="minmax", name="m01_neg"),
        sf.numeric("f_const", default=0.0, normalize="minmax", name="m01_const"),
        sf.numeric("f_int", normalize="minmax", name="m01_int", **i),
        sf.bucketized(sf.numeric("f_neg", default=0.0), num_buckets=7, name="b_neg7"),
        sf.bucketized(sf.numeric("f_dup", default=0.0), num_buckets=10, name="b_dup10"),
        sf.bucketized(sf.numeric("f_const", default=0.0), num_buckets=5, name="b_const5"),
        sf.bucketized(sf.numeric("f_int", **i), num_buckets=4, name="b_int4"),
        sf.bucketized(sf.numeric("f_int", **i), num_buckets=30, name="b_int30"),
        sf.bucketized(sf.numeric("f_neg", default=0.0), boundaries=[-1, 0, 1], name="ab"),
        sf.bucketized(sf.numeric("f_int", **i), boundaries=[0, 5, 10], name="ab_int"),
        sf.crossed(["s", "i"], 50, name="cross"),
        sf.crossed(["tags", "s"], 40, name="cross_tags"),
        cv("tags", top_k=3, num_oov_buckets=1, multivalued=True, name="v_tags"),
        cv("itags", top_k=4, multivalued=True, dtype="int64", name="v_itags"),
        tags,
        cv("s", top_k=100, num_oov_buckets=5, name="v_top100"),
        sf.text("words", lowercase=True, top_k=5, num_oov_buckets=1, name="v_lower_text"),
        sf.lower(sf.strip("words"), name="strip_lower"),
        sf.regex_replace("words", r"\s+", "_", name="rr"),
        sf.numeric("opt", default=0.0, normalize="zscore", present_only=True, name="z_opt"),
        sf.bucketized(sf.numeric("opt", default=0.0, present_only=True, name="opt_p"),
                      num_buckets=5, name="b_opt"),
        sf.categorical_hash(sf.join(["s", sf.bucketized(sf.numeric("f_int", **i), num_buckets=4,
                                                        name="_b4")], "_"), 100,
                            name="join_hash"),
        sf.numeric("f_neg", default=0.0, normalize="clip", clip=(-2, 3), name="clip"),
        sf.numeric("f_neg", default=0.0, normalize="minmax", output_range=(-1, 1),
                   name="mm_neg"),
        sf.numeric("f_const", default=0.0, normalize="minmax", output_range=(2, 5),
                   name="mm_const"),
    ]
    return sf.FeatureSet(cols + sf_more_columns(words, ws))


def broadcast_column():
    """A column holding an analyzer's result on every row, as a ``preprocessing_fn`` broadcasts
    ``tft.sum(x)`` and the like (shardforge is imported only on the shardforge side)."""
    from dataclasses import dataclass
    from typing import Any

    import shardforge.features as sf

    @dataclass(frozen=True)
    class Broadcast(sf.Column):
        """Entry ``index`` of an analyzer's flat result, on every row."""

        key: str
        analyzer: Any
        index: int
        name: str

        def inputs(self):
            shape = (2,) if self.key == "vec" else ()
            return (sf.Input(self.key, "float32", shape, default=0.0),)

        def analyzers(self):
            return {"a": self.analyzer}

        def analyze(self, values):
            x = np.asarray(values[0], np.float64)
            if isinstance(self.analyzer, sf.TukeyParams):  # one key: all values
                return {"a": (x.ravel(), np.zeros(x.size, np.int64))}
            return {"a": x}

        def transform(self, values, state):
            return np.full(len(values[0]), state["a"].values[self.index], np.float32)

        def output(self, state, inputs):
            return sf.Output.numeric()

    return Broadcast


def sf_more_columns(words, ws):
    """The shardforge spelling of ``tft_more_outputs``."""
    import shardforge.features as sf

    bag, weight = sf.tfidf(sf.categorical_hash(ws, 30, name="ws_hash"), 30, name="tfidf")
    bag_ns, weight_ns = sf.tfidf(sf.categorical_hash(ws, 30, name="ws_hash"), 30, smooth=False,
                                 name="tfidf_ns")
    vec = sf.Input("vec", "float32", (2,), default=0.0)
    Broadcast = broadcast_column()  # noqa: N806 (a class)
    return [
        bag, weight,
        sf.BagOfIds(bag_ns.source_input, 30, "tfidf_index_ns"),
        sf.TfidfWeights(weight_ns.source_input, 30, False, "tfidf_weight_ns"),
        sf.bag_of_words(words, (1, 2), " ", name="bow"),
        sf.bag_of_words(ws, (1, 3), "_", name="bow_13"),
        sf.word_count(words, name="word_count"),
        sf.deduplicate(sf.Input("tags", "bytes", multivalued=True), name="dedup_tags"),
        sf.deduplicate(sf.Input("itags", "int64", multivalued=True), name="dedup_itags"),
        sf.hash_strings("s", 17, hash_key=(123, 456), name="hash_key"),
        sf.hash_strings("tags", 1000, hash_key=(-5, 2**40), multivalued=True,
                        name="hash_key_tags"),
        sf.scale_to_z_score_per_key(sf.numeric("f_neg", default=0.0), "u", name="z_pk"),
        sf.scale_to_0_1_per_key(sf.numeric("f_dup", default=0.0), "s", name="m01_pk"),
        sf.scale_by_min_max_per_key(sf.numeric("f_int", dtype="int64", default=0), "u",
                                    -1.0, 1.0, name="mm_pk"),
        sf.bucket_interpolated(sf.numeric("f_neg", default=0.0), [-3.0, 0.0, 0.5, 4.0],
                               name="interp"),
        sf.bucket_interpolated(sf.numeric("f_dup", default=0.0), num_buckets=4,
                               name="interp_dup"),
        sf.categorical_vocab_ranked("s", weights=sf.Input("f_dup", "float32", default=0.0),
                                    top_k=6, num_oov_buckets=1, name="v_weighted"),
        sf.categorical_vocab_ranked("s", labels="lab", top_k=8, num_oov_buckets=1, name="v_mi"),
        sf.categorical_vocab_ranked("s", labels="lab", use_adjusted_mutual_info=True,
                                    min_diff_from_avg=0.0, top_k=8, name="v_ami"),
        sf.categorical_vocab_ranked("s", top_k=2, coverage_top_k=1, key_fn=lambda v: v[:1],
                                    default_value=-9, name="v_cov"),
        sf.bucketize_per_key(sf.numeric("f_neg", default=0.0), "u", 4, name="b_pk"),
        sf.scale_elementwise(vec, "zscore", name="z_ew"),
        sf.scale_elementwise(vec, "minmax", (-1.0, 1.0), name="mm_ew"),
        sf.bucketize_elementwise(vec, 3, name="b_ew"),
        sf.pca_projection(vec, 2, name="pca"),
        sf.estimated_probability_density(sf.numeric("f_dup", default=0.0),
                                         [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0], name="dens"),
        sf.estimated_probability_density(sf.Input("s", "bytes", default=b""), categorical=True,
                                         name="dens_cat"),
        sf.scale_to_gaussian(sf.Input("f_neg", "float32", default=0.0), name="gauss"),
        sf.scale_to_gaussian(sf.Input("f_big", "float32", default=0.0), name="gauss_big"),
        Broadcast("f_neg", sf.Sum(), 0, "sum"),
        Broadcast("vec", sf.Covariance(2), 1, "cov01"),
        Broadcast("f_neg", sf.TukeyParams("values"), 1, "tukey_scale"),
        Broadcast("f_neg", sf.TukeyParams("values"), 3, "tukey_hr"),
        sf.bucketized(sf.numeric("f_huge", dtype="int64", default=0),
                      boundaries=[0, 5_000_001, 10_000_001, 50_000_001], name="ab_big"),
    ]


def run_shardforge(data: dict) -> dict:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    fs = sf_feature_set()
    result = {}
    for name, cols in data.items():
        raw = {k: (np.asarray([v.encode() for v in cols[k]], dtype=object)
                   if KINDS[k] == "bytes" else np.asarray(cols[k])) for k in KINDS}
        raw["tags"] = [[t.encode() for t in r] for r in cols["tags"]]
        raw["itags"] = cols["itags"]
        raw["opt"] = np.asarray([r[0] if r else np.nan for r in cols["opt"]], np.float32)
        raw["vec"] = np.asarray(cols["vec"], np.float32)
        batch, errors = fs.coerce(raw)
        assert not errors, errors[:3]
        state = fs.fit([batch])
        result[name] = fs.transform(batch, state)
    return result


# learned bucketizations: (input, num_buckets); tf.Transform's sketch (eps = 0.01) may put a
# few rows of many distinct values into a neighbouring bucket, shardforge's are exact
BUCKETIZED = {"b_neg7": ("f_neg", 7), "b_dup10": ("f_dup", 10), "b_const5": ("f_const", 5),
              "b_int4": ("f_int", 4), "b_int30": ("f_int", 30), "b_big5": ("f_big", 5),
              "b_opt": ("opt", 5), "b_ew": ("vec", 3), "b_pk": ("f_neg", 4, "u")}


def _exact(x: np.ndarray, xs: np.ndarray, k: int) -> np.ndarray:
    if not len(xs):
        return np.zeros(len(x), np.int64)
    return np.searchsorted(xs[(np.arange(1, k) * len(xs)) // k], x, side="right")


def exact_buckets(cols: dict, name: str) -> np.ndarray:
    """Bucket ids from the exact i/k quantiles (value at rank floor(i*n/k)) of the values: of
    each element position (``vec``), of each key's values (a third entry: the key input)."""
    source, k, *key = BUCKETIZED[name]
    if source == "opt":  # present values only, missing rows filled with 0.0
        x = np.asarray([r[0] if r else 0.0 for r in cols[source]], np.float32)
        return _exact(x, np.sort(np.asarray([r[0] for r in cols[source] if r], np.float32)), k)
    x = np.asarray(cols[source], np.float32)
    if x.ndim == 2:
        return np.stack([_exact(c, np.sort(c), k) for c in x.T], 1)
    if key:
        keys = np.asarray(cols[key[0]], object)
        out = np.zeros(len(x), np.int64)
        for kv in set(keys.tolist()):
            rows = keys == kv
            out[rows] = _exact(x[rows], np.sort(x[rows]), k)
        return out
    return _exact(x, np.sort(x), k)


ZSCORED = {"z_neg": "f_neg", "z_const": "f_const", "z_int": "f_int", "z_dup": "f_dup",
           "z_big": "f_big", "z_ew": "vec"}


def exact_zscores(cols: dict, name: str) -> np.ndarray:
    """float64 z-scores with the population std (x - mean when the std is 0), per element
    position for ``vec``."""
    x = np.asarray(cols[ZSCORED[name]], np.float64)
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def exact_tukey(x: np.ndarray) -> tuple[float, float, float, float]:
    """(location, scale, hl, hr) from the L-moments of the whole sample (Hosking's unbiased
    estimators on the sorted values, computed here directly) and tf.Transform's h search."""
    from shardforge.features.gaussian import tukey_hh_l_mean_and_scale, tukey_hh_params

    xs, n = np.sort(np.asarray(x, np.float64)), len(x)
    i = np.arange(n, dtype=np.float64)
    b = [xs.mean()] + [np.mean(xs * np.prod([(i - j) / (n - 1 - j) for j in range(r)], 0))
                       if n > r else 0.0 for r in (1, 2, 3)]
    l1, l2 = b[0], 2 * b[1] - b[0]
    l3, l4 = 6 * b[2] - 6 * b[1] + b[0], 20 * b[3] - 30 * b[2] + 12 * b[1] - b[0]
    hl, hr = tukey_hh_params(l3 / l2, l4 / l2) if l2 > 0 and n > 3 else (0.0, 0.0)
    mean_hh, scale_hh = tukey_hh_l_mean_and_scale(hl, hr)
    scale = l2 / scale_hh if l2 > 0 else 1.0
    return l1 - scale * mean_hh, scale, hl, hr


def exact_gauss(x: np.ndarray) -> np.ndarray:
    from shardforge.features.gaussian import inverse_tukey_hh

    x = np.asarray(x, np.float64)
    loc, scale, hl, hr = exact_tukey(x)
    den = scale if hl > 0 or hr > 0 else x.std()
    return inverse_tukey_hh((x - loc) / den if den else x - loc, hl, hr)


# analyzer results and mappers whose tf.Transform value is not exact: tf.Transform's float32
# covariance, its L-moments averaged over Beam's batches (so they depend on the batching)
EXACT = {"cov01": lambda c: np.cov(np.asarray(c["vec"], np.float64), rowvar=False,
                                   bias=True)[0, 1],
         "sum": lambda c: np.sum(np.asarray(c["f_neg"], np.float64)),
         "tukey_scale": lambda c: exact_tukey(c["f_neg"])[1],
         "tukey_hr": lambda c: exact_tukey(c["f_neg"])[3],
         "gauss": lambda c: exact_gauss(c["f_neg"]),
         "gauss_big": lambda c: exact_gauss(c["f_big"])}


def rows_of(x) -> list:
    from shardforge.records.spec import Ragged

    if isinstance(x, Ragged):
        return [list(x[i]) for i in range(len(x))]
    return list(x)


def norm(v):
    if isinstance(v, (list, tuple, np.ndarray)):
        return [norm(e) for e in v]
    if isinstance(v, (bytes, np.bytes_)):
        return bytes(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    return int(v)


def same(a, b) -> bool:
    a, b = norm(a), norm(b)
    if isinstance(a, list) != isinstance(b, list):
        a = a if isinstance(a, list) else [a]
        b = b if isinstance(b, list) else [b]
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return bool(np.isclose(a, b, rtol=1e-6, atol=1e-6))
    return a == b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tft-python", help="python with tensorflow-transform")
    ap.add_argument("--run-tft", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--only", default="", help="comma-separated outputs to compute and compare")
    ap.add_argument("--cache", help="keep tf.Transform's outputs in this pickle (reused)")
    ap.add_argument("--show", type=int, default=3, help="differing rows shown per output")
    args = ap.parse_args()
    if args.run_tft:
        run_tft(*args.run_tft)
        return 0
    data = datasets()
    with tempfile.TemporaryDirectory() as tmp:
        out_path = args.cache or os.path.join(tmp, "tft.pkl")
        if not (args.cache and os.path.exists(out_path)):
            if not args.tft_python:
                ap.error("--tft-python is required")
            in_path = os.path.join(tmp, "in.pkl")
            with open(in_path, "wb") as f:
                pickle.dump(data, f)
            subprocess.run([args.tft_python, os.path.abspath(__file__), "--run-tft", in_path,
                            out_path, args.only], check=True)
        with open(out_path, "rb") as f:
            theirs = pickle.load(f)
    ours = run_shardforge(data)
    failed = 0
    for ds in data:
        for name, tft_rows in theirs[ds].items():
            if args.only and name not in args.only.split(","):
                continue
            if name not in ours[ds]:
                print(f"{ds:<12} {name:<14} MISSING in shardforge")
                failed += 1
                continue
            sf_rows = rows_of(ours[ds][name])
            bad = [r for r in range(len(tft_rows)) if not same(tft_rows[r], sf_rows[r])]
            note = ""
            if bad and name in BUCKETIZED:
                off = int(np.sum(np.asarray(sf_rows) != exact_buckets(data[ds], name)))
                note = f"  (shardforge vs exact quantiles: {off} rows)"
                if off == 0:
                    note += " tf.Transform's sketch error, not counted"
            if bad and name in ZSCORED:
                err = np.abs(np.asarray(sf_rows, np.float64) - exact_zscores(data[ds], name))
                tft_err = np.abs(np.asarray(tft_rows, np.float64) - exact_zscores(data[ds], name))
                note = (f"  (max |error| vs float64 z-scores: shardforge {err.max():.2g}, "
                        f"tf.Transform {tft_err.max():.2g})")
                if err.max() <= 1e-6 * max(1.0, np.abs(exact_zscores(data[ds], name)).max()):
                    note += " tf.Transform's float32 statistics, not counted"
            if bad and name in EXACT:
                want = np.broadcast_to(EXACT[name](data[ds]), (len(sf_rows),))
                err = np.max(np.abs(np.asarray(sf_rows, np.float64) - want)
                             / np.maximum(1.0, np.abs(want)))
                note = f"  (shardforge vs the exact value: {err:.2g})"
                if err <= 1e-5:  # float32 outputs of a float64 computation
                    note += " tf.Transform's float32 / per-batch estimate, not counted"
            print(f"{ds:<12} {name:<14} {len(bad):>5} / {len(tft_rows)} rows differ{note}")
            for r in bad[: args.show]:
                inp = {k: data[ds][k][r] for k in [*KINDS, *VARLEN]}
                print(f"    row {r}: tft {norm(tft_rows[r])!r} sf {norm(sf_rows[r])!r}  {inp}")
            failed += bool(bad) and "not counted" not in note
    print("no difference beyond tf.Transform's own sketch / float32 error" if not failed
          else f"{failed} outputs differ")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
