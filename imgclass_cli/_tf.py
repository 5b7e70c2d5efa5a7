"""Lazy, quiet TensorFlow import: nothing at CLI start-up imports TensorFlow."""

import contextlib
import os
import sys
import weakref

_DEBUG = False
ONEDNN_DEFAULT = "1"


def set_debug(debug: bool) -> None:
    global _DEBUG
    _DEBUG = debug


def tf():
    """Import TensorFlow once, silencing its C++ start-up chatter unless --debug."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow leaves its oneDNN kernels off on many CPUs (those without AVX-512), where they cut the CPU time of a
    # training step by a third (bench/onednn.py). On unless the user set the variable (TF_ENABLE_ONEDNN_OPTS=0
    # turns them off); it must be set before TensorFlow loads.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", ONEDNN_DEFAULT)
    if _DEBUG:
        import tensorflow

        return tensorflow
    # absl writes to file descriptor 2 directly during import; silence that one moment only.
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    tensorflow.get_logger().setLevel("ERROR")
    return tensorflow


def keras():
    tf()
    import keras

    return keras


def without_autotune(ds):
    """`ds` with tf.data's autotuning off: map parallelism defaults to the CPU count (at most 16) and prefetch
    buffers still grow as needed, but no autotuning thread runs. In TensorFlow 2.21 that thread is not woken when
    its iterator is deleted: the deletion waits out the thread's current optimisation period, which doubles up to
    60 s. Keras deletes the training iterator at the start of every epoch and when fit returns, so about a third
    of the epochs froze the process for 10-60 s (bench/autotune_stall.py). Every tf.data pipeline of imgclass
    that is iterated goes through here."""
    options = tf().data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


_FORWARD: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def inference_fn(model):
    """model(x, training=False) as one traced graph: batches of evaluate, predict and the final validation run
    2.4x faster than eager calls (the scratch cnn at 28 px: 1,070 -> 2,540 images/s on 2 cores). One per model,
    traced once: the custom loop validates every epoch. It holds the model weakly, so the model can still go."""
    forward = _FORWARD.get(model)
    if forward is None:
        ref = weakref.ref(model)
        forward = _FORWARD[model] = tf().function(lambda x: ref()(x, training=False), reduce_retracing=True)
    return forward


def is_debug() -> bool:
    return _DEBUG


@contextlib.contextmanager
def quiet_native_stderr():
    """TFLite and the converter print from C++ straight to fd 2 (XNNPACK, calibration notes): hide that, unless --debug."""
    if _DEBUG:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
