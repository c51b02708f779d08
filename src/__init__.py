"""Digit Recognizer: tune, ensemble and submit CNNs for Kaggle's MNIST competition.

The flow is one way: data -> model -> tune -> ensemble -> report / submit.
"""

__version__ = "0.1.0"
