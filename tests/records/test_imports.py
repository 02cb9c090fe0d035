"""``shardforge.records`` works without TensorFlow and torch (and without pyarrow until an Arrow
function is used)."""

import subprocess
import sys

CODE = """
import sys
sys.modules["tensorflow"] = None  # any import of them now fails
sys.modules["torch"] = None
import shardforge.records as R
assert "pyarrow" not in sys.modules
data = R.encode_example({"a": [1, 2]})
assert R.decode_batch([data], {"a": R.VarLen("int64")})["a"].to_list() == [[1, 2]]
R.batch_to_arrow({"a": R.Ragged.from_rows([[1]])})
print("ok")
"""


def test_records_import_without_tensorflow_or_torch():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


LIGHT = """
import sys
import shardforge.records.layout, shardforge.records.spec
assert "numba" not in sys.modules and "google.protobuf" not in sys.modules, "heavy import"
from shardforge.records import *  # every name in __all__ resolves
import shardforge.records as R
assert all(hasattr(R, name) for name in R.__all__)
print("ok")
"""


def test_light_submodules_import_neither_numba_nor_protobuf():
    # the launcher imports records.layout and records.manifest: numba and protobuf cost it ~1 s
    out = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
