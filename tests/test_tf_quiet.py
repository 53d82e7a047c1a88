"""TensorFlow is imported quietly unless asked (issue 12): no start-up lines on standard error."""
import os
import subprocess
import sys

import pytest

CODE = "from kappaflow.ml.model import _import_tf; tf = _import_tf(); print(float(tf.constant(2.0) + 1))"


def _run(env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KAPPAFLOW_TF_VERBOSE")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=300)


def test_tensorflow_import_prints_nothing_by_default():
    pytest.importorskip("tensorflow")
    proc = _run({})
    assert proc.returncode == 0 and proc.stdout.strip() == "3.0"
    assert proc.stderr == "", proc.stderr


def test_tensorflow_start_up_lines_come_back_when_asked():
    pytest.importorskip("tensorflow")
    loud = _run({"KAPPAFLOW_TF_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert loud.returncode == 0
    # what TensorFlow itself prints at level 0 on this build (CPU-feature notice, oneDNN or absl lines)
    assert loud.stderr.strip(), "expected TensorFlow's own start-up lines at TF_CPP_MIN_LOG_LEVEL=0"
    # a TF_CPP_MIN_LOG_LEVEL the user set is TensorFlow's own switch and is respected (not overridden);
    # only the import itself stays quiet without KAPPAFLOW_TF_VERBOSE
