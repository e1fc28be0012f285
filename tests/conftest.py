"""Shared pytest setup: the report header names the TensorFlow CPU kernels in use.

Fixture ``exact_plans``: sparse plans made while it is active follow the
frozen structure exactly (the cost model's per-call and per-copy costs are
zero), so that small test layers run several blocks, input gathers with
repeated channels and output placement, which the calibrated model would
merge into one block at these sizes.
"""

import os

import keras
import pytest
import tensorflow as tf

from channelconv import plan
from harness import onednn_enabled


@pytest.fixture
def exact_plans(monkeypatch):
    monkeypatch.setattr(plan, "CALL_COST", 0)
    monkeypatch.setattr(plan, "COPY_COST", 0)


def pytest_report_header(config):
    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")
    return (
        f"TensorFlow {tf.__version__}, Keras {keras.__version__} "
        f"({keras.backend.backend()} backend); oneDNN CPU kernels "
        f"{'on' if onednn_enabled() else 'off'} (TF_ENABLE_ONEDNN_OPTS={setting})"
    )
