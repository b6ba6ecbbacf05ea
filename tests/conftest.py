"""Shared test setup: quiet TF, float32 by default, and a policy-restoring fixture."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "0")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def policy():
  """Yields a setter for the global mixed-precision policy; restores float32 afterwards."""
  try:
    yield keras.mixed_precision.set_global_policy
  finally:
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def _float32_policy():
  keras.mixed_precision.set_global_policy("float32")
  yield
  keras.mixed_precision.set_global_policy("float32")
