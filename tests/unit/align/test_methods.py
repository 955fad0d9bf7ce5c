"""The method table (server/align/methods.py) is the one list of fit methods: validation, auto's
candidates, state dispatch, the CLI and the docs all read it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from convergent.server.align import PairedStats, methods
from convergent.server.errors import InvalidInput
from convergent.wire import FIT_METHODS

DOCS = Path(__file__).resolve().parents[3] / "docs" / "alignment.md"


def _pairs(n=300, d=10, seed=0):
    """Y = 2 X P S + noise with a known permutation P and signs S: every family can recover it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    signs = rng.choice([-1.0, 1.0], size=d)
    return X, 2 * X[:, rng.permutation(d)] * signs + 0.1 * rng.normal(size=(n, d)) + 1.0


def test_docs_hold_the_generated_table():
    text = DOCS.read_text()
    between = re.search(r"<!-- methods table: begin -->\n(.*?)\n<!-- methods table: end -->", text, re.S)
    assert between, "docs/alignment.md lost its methods table markers"
    assert between.group(1).strip() == methods.markdown_table().strip(), "run `convergent methods --markdown` into docs/alignment.md"
    described = set(re.findall(r"^\| `([a-z_]+)`", text[: between.start()], re.M))
    assert set(methods.PARAMS) <= described, "every method needs a row in the map / export table"


def test_contract_and_table_agree():
    assert set(methods.PARAMS) == set(FIT_METHODS)
    for name in methods.DEFAULT_CANDIDATES:  # the contract's summary of auto names its default candidates
        assert name.split("_")[0] in FIT_METHODS["auto"]
    ranks = [c.rank for c in methods.CANDIDATES.values()]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert all(c.method in methods.METHODS for c in methods.CANDIDATES.values())


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_every_method_fits_round_trips_and_reports_its_parameters(name):
    X, Y = _pairs()
    method = methods.METHODS[name]
    params = methods.validate_params(name, {"epochs": 30} if name == "mlp" else {})
    estimator = methods.fit(name, params, PairedStats.from_arrays(X[:240], Y[:240]), heldout=(X[240:], Y[240:]),
                            pairs=(X[:240], Y[:240]))
    assert isinstance(estimator, method.states)
    params, arrays = estimator.get_state()
    rebuilt = methods.estimator_from_state(json.loads(json.dumps(params)), arrays)
    np.testing.assert_allclose(rebuilt.transform(X[240:]), estimator.transform(X[240:]), rtol=1e-6, atol=1e-9)
    assert estimator.score(X[240:], Y[240:]) > 0.9  # on new pairs
    rows = methods.describe(name)
    assert rows[-1][0] == "seed" and all(accepted for _, accepted, _, _ in rows)
    assert methods.fit_memory_bytes(name, {}, 512, 512) >= 8 * 3 * 512 * 512


@pytest.mark.parametrize("name", [*methods.PARAMS, *methods.OTHER_PARAMS])
def test_defaults_are_accepted_and_hostile_values_refused(name):
    check = {methods.SHARED: methods.validate_shared_params, methods.COOPERATIVE: methods.validate_cooperative_params,
             methods.SHARED_CONTRASTIVE: lambda p: methods.validate_shared_params({"method": "contrastive", **p})}.get(
        name, lambda p: methods.validate_params(name, p))
    model = methods.OTHER_PARAMS.get(name) or methods.PARAMS[name]
    for key, info in model.model_fields.items():
        if info.default is not None:
            assert check({key: info.default}).items() >= {key: info.default}.items()
        for hostile in ("x", 1e300, -1, True, None, [1e300]):
            if hostile is True and isinstance(info.default, bool):
                continue
            with pytest.raises(InvalidInput, match=f"parameter '{key}'"):
                check({key: hostile})
    with pytest.raises(InvalidInput, match="unknown parameters"):
        check({"lambda_": 1})


def test_integers_arrive_as_doubles_and_penalties_exclude_each_other():
    assert methods.validate_params("sparse", {"max_iter": 30.0}) == {"max_iter": 30}
    assert type(methods.validate_params("sparse", {"max_iter": 30.0})["max_iter"]) is int
    with pytest.raises(InvalidInput, match="must be an integer"):
        methods.validate_params("sparse", {"max_iter": 30.5})
    with pytest.raises(InvalidInput, match="either 'alpha' or 'alphas'"):
        methods.validate_params("ridge", {"alpha": 1.0, "alphas": [1.0, 2.0]})
    with pytest.raises(InvalidInput, match="unknown method 'magic'"):
        methods.validate_params("magic", {})
    assert methods.validate_params("auto", {"candidates": ["ridge", "cca"]}) == {"candidates": ["ridge", "cca"]}
    with pytest.raises(InvalidInput, match=r"unknown candidates \['nope'\]"):
        methods.validate_params("auto", {"candidates": ["nope"]})


def test_unknown_state_class_is_refused():
    with pytest.raises(InvalidInput, match="unknown estimator class"):
        methods.estimator_from_state({"class": "SharedSpace"}, {})
