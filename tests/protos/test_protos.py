"""The committed ``_pb2`` modules match their ``.proto`` sources, and the messages are
wire-compatible with TensorFlow's ``tf.train.Example`` / ``SequenceExample``."""

import shutil
import subprocess
import sys
from pathlib import Path

import shardforge.protos
from shardforge.protos import example_pb2

PROTO_DIR = Path(shardforge.protos.__file__).parent


def test_committed_pb2_are_fresh(tmp_path):
    out = tmp_path / "shardforge" / "protos"
    out.mkdir(parents=True)
    protos = sorted(PROTO_DIR.glob("*.proto"))
    for proto in protos:
        shutil.copy(proto, out / proto.name)
    # In a child process: protoc segfaults in a process that has already loaded TensorFlow.
    args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}",
            f"--python_out={tmp_path}", f"--pyi_out={tmp_path}"]
    subprocess.run(args + [str(out / p.name) for p in protos], check=True)
    for proto in protos:
        for suffix in ("_pb2.py", "_pb2.pyi"):
            name = proto.stem + suffix
            fresh, committed = (out / name).read_text(), (PROTO_DIR / name).read_text()
            assert fresh == committed, f"{name} is stale: run `make protos` and commit it"


def _ours() -> bytes:
    ex = example_pb2.Example()
    feats = ex.features.feature
    feats["i"].int64_list.value.extend([1, -2, 2**62])
    feats["f"].float_list.value.extend([0.5, -1.25])
    feats["b"].bytes_list.value.extend([b"x", b"", "é".encode()])
    return ex.SerializeToString(deterministic=True)


def test_example_wire_compatible_with_tensorflow():
    import tensorflow as tf

    theirs = tf.train.Example.FromString(_ours())
    assert list(theirs.features.feature["i"].int64_list.value) == [1, -2, 2**62]
    assert list(theirs.features.feature["f"].float_list.value) == [0.5, -1.25]
    assert list(theirs.features.feature["b"].bytes_list.value) == [b"x", b"", "é".encode()]
    # and the other way round: TF's bytes are ours, byte for byte after a round trip
    assert example_pb2.Example.FromString(theirs.SerializeToString()).SerializeToString(
        deterministic=True
    ) == _ours()


def test_sequence_example_wire_compatible_with_tensorflow():
    import tensorflow as tf

    seq = example_pb2.SequenceExample()
    seq.context.feature["len"].int64_list.value.append(2)
    steps = seq.feature_lists.feature_list["tok"].feature
    steps.add().int64_list.value.extend([1, 2])
    steps.add().float_list.value.append(3.5)
    theirs = tf.train.SequenceExample.FromString(seq.SerializeToString())
    assert theirs.context.feature["len"].int64_list.value == [2]
    got = theirs.feature_lists.feature_list["tok"].feature
    assert list(got[0].int64_list.value) == [1, 2] and list(got[1].float_list.value) == [3.5]
    back = example_pb2.SequenceExample.FromString(theirs.SerializeToString())
    assert back == seq
