"""Digit Recognizer: tune, ensemble and submit CNNs for Kaggle's MNIST competition.

The flow is one way: data -> model -> tune -> ensemble -> report / submit.
"""

import os
import signal
import sys

# Fewer of TensorFlow's C++ start-up lines (its CPU-feature notice); set before any stage
# imports TensorFlow. TensorFlow 2.21 prints six more at any level: absl's notice, oneDNN's
# and "no CUDA driver", each twice.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def _interrupted_while_starting(signum, frame) -> None:
    """Ctrl-C while a stage's command still imports (TensorFlow takes seconds), before
    config.run_cli takes it over: one line and exit code 130, as later, not a traceback
    from inside an import. Nothing has been read or written yet."""
    sys.stderr.write("interrupted: before the command started; nothing was written\n")
    sys.stderr.flush()
    os._exit(130)


def ctrl_c_as_usual() -> None:
    """Hand Ctrl-C back to Python's KeyboardInterrupt, which run_cli turns into one line."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _launched_as_a_stage() -> bool:
    """Whether this process is `python -m src.<stage>`: not pytest, a notebook or a worker,
    which keep Python's own Ctrl-C."""
    argv = sys.orig_argv
    return any(flag == "-m" and module.startswith("src.")
               for flag, module in zip(argv, argv[1:], strict=False))


# A Ctrl-C that is ignored (a shell's background job) stays ignored.
if _launched_as_a_stage() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted_while_starting)
