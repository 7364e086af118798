"""Prediction tile encoding: quantise, encode and decode round-trip exactly."""

import numpy as np
import pytest

from pipeline.core.errors import InputDataError
from pipeline.inference.probs import decode_probs, encode_probs, quantise


def test_round_trip_stacks_bands() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((3, 16, 16)).astype(np.float32)
    q = quantise(p)
    assert np.abs(q / 255.0 - p).max() <= 0.5 / 255 + 1e-6
    back = decode_probs(encode_probs(q), 3)
    assert np.array_equal(back, q)


def test_wrong_class_count_names_tile() -> None:
    data = encode_probs(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(InputDataError, match="19/1/2"):
        decode_probs(data, 3, "19/1/2")
    with pytest.raises(InputDataError, match="not a readable PNG"):
        decode_probs(b"garbage", 1, "t")
