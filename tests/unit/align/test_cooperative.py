"""The cooperative head: one softmax regression per teacher, averaged (module docstring)."""

from __future__ import annotations

import numpy as np
import pytest

from convergent.server.align.cooperative import CooperativeHead, combine_teachers
from convergent.server.errors import InvalidInput


def _softmax(L: np.ndarray) -> np.ndarray:
    E = np.exp(L - L.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def test_a_mixture_of_teacher_heads_reproduces_the_teachers_mean(rng):
    """Teachers that are each softmax-linear in z: their mean is not, so one regression fitted to
    it leaves an error that the per-teacher mixture does not."""
    Z = rng.standard_normal((600, 6))
    teachers = [_softmax(3 * Z @ rng.standard_normal((6, 4))) for _ in range(2)]
    mean = combine_teachers(teachers)
    mixture = CooperativeHead(reg=1e-6).fit([Z], teachers)
    single = CooperativeHead(reg=1e-6).fit([Z], mean)
    mixture_error = np.abs(mixture.predict_proba(Z) - mean).max()
    single_error = np.abs(single.predict_proba(Z) - mean).max()
    assert mixture_error < 0.05 < single_error, (mixture_error, single_error)
    assert mixture.weight_.shape == (2, 4, 6) and single.weight_.shape == (1, 4, 6)
    np.testing.assert_allclose(mixture.predict_proba(Z).sum(axis=1), 1.0, atol=1e-9)


def test_state_round_trip_and_heads_stored_as_one_regression(rng):
    Z = rng.standard_normal((100, 3))
    head = CooperativeHead().fit([Z, Z + 0.1], [_softmax(Z @ rng.standard_normal((3, 2))), _softmax(-Z[:, :2])])
    params, arrays = head.get_state()
    again = CooperativeHead.from_state(params, arrays)
    np.testing.assert_allclose(again.predict_proba(Z), head.predict_proba(Z), atol=1e-12)
    exported = head.export()
    manual = np.mean([_softmax(((Z - exported["mean"]) / exported["scale"]) @ W.T + b)
                      for W, b in zip(exported["W"], exported["b"])], axis=0)
    np.testing.assert_allclose(manual, head.predict_proba(Z), atol=1e-12)  # the documented formula
    old = {**arrays, "weight_": arrays["weight_"][0], "bias_": arrays["bias_"][0]}  # an earlier release's head
    assert CooperativeHead.from_state(params, old).weight_.shape == (1, 2, 3)
    with pytest.raises(InvalidInput, match="do not match"):
        CooperativeHead.from_state(params, {**arrays, "bias_": arrays["bias_"][:, :1]})
    with pytest.raises(InvalidInput, match="same classes"):
        CooperativeHead().fit([Z], [_softmax(Z), _softmax(Z[:, :2])])
