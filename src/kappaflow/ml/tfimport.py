"""The one way kappaflow imports TensorFlow: quiet unless asked.

TensorFlow prints start-up lines on standard error when it is imported (CPU-feature notices, oneDNN,
CUDA/cuDNN factory registration on GPU builds; some come from absl before TensorFlow's own log level
applies, so ``TF_CPP_MIN_LOG_LEVEL`` alone does not silence them).  :func:`import_tensorflow` sets the
log level, imports TensorFlow with the process's standard error sent to a temporary file, and replays
that file only if the import fails.  ``KAPPAFLOW_TF_VERBOSE=1`` turns all of this off (every line
printed, TensorFlow's own log level untouched).
"""

from __future__ import annotations

import os
import sys
import tempfile

VERBOSE_ENV = "KAPPAFLOW_TF_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def import_tensorflow():
    if "tensorflow" in sys.modules or verbose():
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    tf.get_logger().setLevel("ERROR")
    return tf


def activation(tf, name: str):
    """The networks' activation functions as TensorFlow callables (training and on-the-fly inference
    share this one definition)."""
    if name == "gaussian":
        return lambda z: tf.exp(-z * z)
    if name == "tanh":
        return tf.tanh
    if name == "softplus":
        return tf.nn.softplus
    if name == "silu":
        return lambda z: z * tf.sigmoid(z)
    raise ValueError(f"unknown activation {name!r} (gaussian, tanh, softplus, silu)")
