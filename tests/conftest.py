"""Shared pytest setup: the report header names the TensorFlow CPU kernels in use."""

import os

import keras
import tensorflow as tf

from harness import onednn_enabled


def pytest_report_header(config):
    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")
    return (
        f"TensorFlow {tf.__version__}, Keras {keras.__version__} "
        f"({keras.backend.backend()} backend); oneDNN CPU kernels "
        f"{'on' if onednn_enabled() else 'off'} (TF_ENABLE_ONEDNN_OPTS={setting})"
    )
