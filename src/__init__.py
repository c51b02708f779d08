"""Digit Recognizer: tune, ensemble and submit CNNs for Kaggle's MNIST competition.

The flow is one way: data -> model -> tune -> ensemble -> report / submit.
"""

import os

# Silence TensorFlow's C++ start-up chatter; set before any stage imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
