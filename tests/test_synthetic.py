"""SynthFER contract: shape/dtype, determinism, FER2013 class frequencies, label noise, that every
expression actually changes the face, and the generation-speed budget. (That a CNN can learn it to
~80-95% with FER-like confusions was measured when tuning; it is too slow for a unit test.)"""

from __future__ import annotations

import time

import numpy as np
import pytest

from fer_core.data.synthetic import SYNTH_CLASS_FREQ, generate
from fer_core.labels import EMOTIONS, NUM_CLASSES


@pytest.fixture(scope="module")
def big() -> tuple[np.ndarray, np.ndarray]:
    return generate(20000, seed=0, label_noise=0.0)


def test_shape_dtype():
    x, y = generate(50, seed=3)
    assert x.shape == (50, 48, 48) and x.dtype == np.uint8
    assert y.shape == (50,) and y.dtype == np.int64
    assert y.min() >= 0 and y.max() < NUM_CLASSES
    assert x.std() > 10  # not blank


def test_empty_and_odd_sizes():
    x, y = generate(0)
    assert x.shape == (0, 48, 48) and y.shape == (0,)
    x, y = generate(67, seed=1)  # not a multiple of the internal chunk
    assert x.shape == (67, 48, 48) and len(y) == 67


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate(-1)
    with pytest.raises(ValueError):
        generate(10, label_noise=1.5)


def test_deterministic():
    x1, y1 = generate(300, seed=7)
    x2, y2 = generate(300, seed=7)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    x3, y3 = generate(300, seed=8)
    assert not np.array_equal(x1, x3)
    assert not np.array_equal(y1, y3)


def test_class_frequency_constant():
    assert len(SYNTH_CLASS_FREQ) == NUM_CLASSES
    assert abs(sum(SYNTH_CLASS_FREQ) - 1.0) < 1e-9
    assert SYNTH_CLASS_FREQ[EMOTIONS.index("disgust")] == pytest.approx(436 / 28709)
    assert max(SYNTH_CLASS_FREQ) == SYNTH_CLASS_FREQ[EMOTIONS.index("happy")]


def test_class_frequencies_follow_fer2013(big):
    _, y = big
    freq = np.bincount(y, minlength=NUM_CLASSES) / len(y)
    np.testing.assert_allclose(freq, SYNTH_CLASS_FREQ, atol=0.012)
    assert 0.010 < freq[EMOTIONS.index("disgust")] < 0.021


def test_label_noise_changes_labels():
    _, clean = generate(2000, seed=5, label_noise=0.0)
    x_noisy, noisy = generate(2000, seed=5, label_noise=0.1)
    x_clean, _ = generate(2000, seed=5, label_noise=0.0)
    assert np.array_equal(x_noisy, x_clean)  # same faces, only some labels differ
    changed = (clean != noisy).mean()
    assert 0.07 < changed < 0.13


def test_every_expression_differs_from_neutral(big):
    x, y = big
    xf = x.astype(np.float64)
    neutral = xf[y == EMOTIONS.index("neutral")].mean(0)
    # Difference of class mean faces vs. the spread of neutral means over random halves.
    rng = np.random.default_rng(0)
    idx = np.flatnonzero(y == EMOTIONS.index("neutral"))
    halves = [xf[rng.permutation(idx)[: len(idx) // 2]].mean(0) for _ in range(2)]
    noise_floor = np.abs(halves[0] - halves[1]).mean()
    for c, name in enumerate(EMOTIONS):
        if name == "neutral":
            continue
        diff = np.abs(xf[y == c].mean(0) - neutral).mean()
        assert diff > 1.5 * noise_floor, f"{name} mean face is too close to neutral's ({diff:.2f} vs {noise_floor:.2f})"


def test_generation_speed():
    generate(100)  # warm up
    t = time.perf_counter()
    x, _ = generate(10000, seed=1)
    elapsed = time.perf_counter() - t
    assert len(x) == 10000
    # Typically 2-4 s on a loaded 2-core machine; the bound is generous for shared CI runners.
    assert elapsed < 10.0, f"generate(10000) took {elapsed:.1f}s"
