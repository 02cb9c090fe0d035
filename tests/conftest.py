"""Shared test setup.

Triton must be imported before TensorFlow: both bundle LLVM, and in the other order the process
aborts with "Option 'bitcode-mdindex-threshold' registered more than once". Kernel tests run the
Triton code itself under the interpreter, which the decorator reads at import time.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

try:
    import triton  # noqa: F401
except ImportError:  # triton is a dev/gpu extra; kernel tests skip with a reason without it
    pass
