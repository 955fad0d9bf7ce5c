"""The method catalogue on the wire (InfoService.ListMethods): every method of the table with the
JSON Schema (draft 2020-12) of its ``params``, and a server that refuses exactly what the schema
says is out of range. ``jsonschema`` is not a dependency: a small validator of the keywords the
catalogue uses stands in (and the real one also runs where it is installed)."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convergent.client import Client, MethodInfo, errors
from convergent.server.align import methods
from convergent.server.align.params import Range
from convergent.server.rpc.app import ConvergentServer
from tests.conftest import make_settings

DIALECT = "https://json-schema.org/draft/2020-12/schema"
RPCS = {methods.SHARED: "FitSharedSpace", methods.SHARED_CONTRASTIVE: "FitSharedSpace", methods.COOPERATIVE: "FitCooperative"}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> ConvergentServer:  # noqa: ANN001
    """One server for the module (SQLite): the catalogue does not depend on the database."""
    with ConvergentServer(make_settings(tmp_path_factory.mktemp("methods") / "data")) as running:
        yield running


@pytest.fixture(scope="module")
def catalogue(server: ConvergentServer) -> dict[str, MethodInfo]:
    with Client(server.address, timeout=20) as c:
        return {m.name: m for m in c.list_methods()}


# ---------------------------------------------------------------- a small JSON Schema 2020-12 checker
_TYPES = {"integer", "number", "boolean", "string", "array", "object", "null"}
_NUMERIC = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_COUNTS = ("minItems", "maxItems")
_ANNOTATIONS = ("title", "description", "default", "$schema")
_KNOWN = {*_NUMERIC, *_COUNTS, *_ANNOTATIONS, "type", "enum", "items", "uniqueItems", "properties",
          "additionalProperties", "required", "not"}


def check_schema(schema: Any, where: str = "") -> None:
    """Structure of a 2020-12 schema for the keywords used here (every keyword known, each value
    of the type the specification gives it; draft-4 boolean exclusive bounds are refused)."""
    assert isinstance(schema, dict), where
    unknown = set(schema) - _KNOWN
    assert not unknown, f"{where}: keywords {unknown} are not used by the catalogue's checker"
    if "$schema" in schema:
        assert schema["$schema"] == DIALECT and not where, where
    if "type" in schema:
        assert schema["type"] in _TYPES, where
    for key in _NUMERIC:
        if key in schema:
            assert isinstance(schema[key], (int, float)) and not isinstance(schema[key], bool), (where, key)
    for key in _COUNTS:
        if key in schema:
            assert isinstance(schema[key], int) and not isinstance(schema[key], bool) and schema[key] >= 0, (where, key)
    if "enum" in schema:
        assert isinstance(schema["enum"], list) and schema["enum"], where
    for key in ("uniqueItems",):
        if key in schema:
            assert isinstance(schema[key], bool), where
    if "additionalProperties" in schema:
        assert isinstance(schema["additionalProperties"], (bool, dict)), where
    if "required" in schema:
        assert isinstance(schema["required"], list) and all(isinstance(k, str) for k in schema["required"]), where
        assert len(set(schema["required"])) == len(schema["required"]), where
    if "items" in schema:
        check_schema(schema["items"], f"{where}/items")
    if "not" in schema:
        check_schema(schema["not"], f"{where}/not")
    for key, sub in schema.get("properties", {}).items():
        check_schema(sub, f"{where}/properties/{key}")


def _is_type(value: Any, kind: str) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {
        "integer": number and math.isfinite(value) and float(value).is_integer(),  # 3.0 is an integer in JSON Schema
        "number": number,
        "boolean": isinstance(value, bool),
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
        "null": value is None,
    }[kind]


def errors_of(schema: dict, value: Any) -> list[str]:
    """Why ``value`` is not valid against ``schema`` (empty: valid), for the keywords of check_schema."""
    if "type" in schema and not _is_type(value, schema["type"]):
        return [f"not of type {schema['type']}"]
    found = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{value!r} not in {schema['enum']}")
    if _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            found.append("below minimum")
        if "maximum" in schema and value > schema["maximum"]:
            found.append("above maximum")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            found.append("not above exclusiveMinimum")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            found.append("not below exclusiveMaximum")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            found.append("too few items")
        if len(value) > schema.get("maxItems", math.inf):
            found.append("too many items")
        if schema.get("uniqueItems") and len({repr(v) for v in value}) != len(value):
            found.append("items repeat")
        for i, item in enumerate(value):
            found += [f"[{i}] {e}" for e in errors_of(schema.get("items", {}), item)]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            found += [f"{k!r} is not allowed" for k in value if k not in properties]
        found += [f"{k!r} is required" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key in properties:
                found += [f"{key}: {e}" for e in errors_of(properties[key], item)]
        if "not" in schema and not errors_of(schema["not"], value):
            found.append("matches the schema under 'not'")
    return found


def valid(schema: dict, value: Any) -> bool:
    ours = not errors_of(schema, value)
    try:
        import jsonschema
    except ImportError:
        return ours
    assert jsonschema.Draft202012Validator(schema).is_valid(value) is ours, (schema, value)
    return ours


# ---------------------------------------------------------------- requests
def fit(client: Client, info: MethodInfo, params: dict) -> None:
    """Send ``params`` to the RPC that takes ``info``'s method, on models and sets that do not exist:
    parameters are validated first, so a valid ``params`` gets NOT_FOUND and an invalid one INVALID_ARGUMENT."""
    if info.rpc == "FitAlignment":
        client.fit_alignment("ghost-a", "ghost-b", anchor_set="ghost", method=info.name, **params)
    elif info.rpc == "FitSharedSpace":
        client.fit_shared_space(["ghost-a", "ghost-b"], anchor_set="ghost", **params)
    else:
        client.fit_cooperative("ghost-space", anchor_set="ghost", teachers=["ghost-t"], **params)


def inside_and_outside(prop: dict) -> tuple[list, list]:
    """Values at the edges of a property's range, and values just past every bound and of wrong types."""
    kind, inside, outside = prop["type"], [], []
    if "enum" in prop:
        inside += prop["enum"]
        outside += ["not-a-value", 1]
    elif kind == "boolean":
        inside += [True, False]
        outside += [1, "true"]
    elif kind in ("integer", "number"):
        step = 1 if kind == "integer" else None
        for key, sign in (("minimum", -1), ("maximum", 1)):
            if key in prop:
                edge = prop[key]
                inside.append(edge)
                outside.append(edge + sign * (step or max(1e-9, 1e-9 * abs(edge))))
        for key, sign in (("exclusiveMinimum", 1), ("exclusiveMaximum", -1)):
            if key in prop:
                edge = prop[key]
                inside.append(edge + sign * max(1e-9, 1e-9 * abs(edge)))
                outside.append(edge)
        outside += ["1", True] + ([2.5 + (prop.get("minimum") or 0)] if kind == "integer" else [])
    elif kind == "array":
        item_in, item_out = inside_and_outside(prop["items"])
        inside += [item_in[:1] * prop.get("minItems", 1)]
        most = prop["maxItems"]
        inside.append((item_in * most)[:most] if prop.get("uniqueItems") else item_in[:1] * most)
        outside += [[], item_in[:1] * (most + 1), "x", *([v] for v in item_out)]
        if prop.get("uniqueItems"):
            outside.append(item_in[:1] * 2)
    return inside, outside


# ---------------------------------------------------------------- the tests
def test_every_method_is_listed_with_its_rpc_summary_and_candidates(catalogue):
    assert list(catalogue) == [*methods.PARAMS, *methods.OTHER_PARAMS]
    for name, info in catalogue.items():
        assert info.rpc == RPCS.get(name, "FitAlignment"), name
        assert info.summary and "\n" not in info.summary, name
        assert info.candidates == (list(methods.CANDIDATES) if name == methods.AUTO else []), name
    assert set(methods.DEFAULT_CANDIDATES) <= set(catalogue[methods.AUTO].candidates)


def test_schemas_are_2020_12_objects_from_the_parameter_models(catalogue):
    for name, info in catalogue.items():
        schema = info.params_schema
        check_schema(schema)
        assert schema["$schema"] == DIALECT and schema["type"] == "object" and schema["additionalProperties"] is False
        model = methods.OTHER_PARAMS.get(name) or methods.PARAMS[name]
        assert list(schema["properties"]) == [key for key, *_ in methods.describe(name)], name  # same names, same order
        for key, prop in schema["properties"].items():
            field = model.model_fields[key]
            assert prop.get("description"), (name, key)
            python = field.annotation
            expected = {int: "integer", float: "number", bool: "boolean", str: "string"}.get(python) or (
                "integer" if python == int | None else "number" if python == float | None else "array")
            assert prop["type"] == expected, (name, key, prop["type"], python)
            if prop["type"] in ("integer", "number"):  # every number is bounded both ways
                assert {"minimum", "exclusiveMinimum"} & set(prop) and {"maximum", "exclusiveMaximum"} & set(prop), (name, key)
            if prop["type"] == "array":
                assert "maxItems" in prop and "type" in prop["items"], (name, key)
            if field.default is None:
                assert "default" not in prop, (name, key)  # chosen from the data: nothing to send
            elif key != "method":
                assert prop["default"] == field.default, (name, key)
            if "default" in prop:
                assert valid(prop, prop["default"]), (name, key, prop)
        ranges = {key: next(m for m in model.model_fields[key].metadata if isinstance(m, Range)) for key in schema["properties"]}
        assert all(r.schema for r in ranges.values()), name


def test_each_schema_validates_its_defaults_and_the_server_takes_them(server, catalogue):
    with Client(server.address, timeout=20) as client:
        for name, info in catalogue.items():
            assert info.defaults == {k: p["default"] for k, p in info.params_schema["properties"].items() if "default" in p}
            assert valid(info.params_schema, info.defaults), (name, errors_of(info.params_schema, info.defaults))
            assert valid(info.params_schema, {}) is (name != methods.SHARED_CONTRASTIVE)  # it needs method=contrastive
            with pytest.raises(errors.NotFound):  # past validation: the ghost models are what is missing
                fit(client, info, info.defaults)


@pytest.mark.parametrize("method", ["ridge", "procrustes"])
def test_params_from_the_schema_defaults_fit(start_server, rng, method):
    server = start_server()
    X = rng.standard_normal((200, 8))
    Y = X @ np.linalg.qr(rng.standard_normal((8, 8)))[0] + 0.01 * rng.standard_normal((200, 8))
    ids = [f"i{k}" for k in range(200)]
    with Client(server.address, timeout=20) as client:
        info = next(m for m in client.list_methods() if m.name == method)
        for name, data in (("a", X), ("b", Y)):
            client.register_model(name, dim=8, normalize=False)
            client.upload_anchors(name, anchor_set="s", ids=ids, vectors=data)
        fitted = client.fit_alignment("a", "b", anchor_set="s", method=method, **info.defaults)
    assert fitted.method == method and fitted.converged and fitted.metrics["r2"] > 0.9


def test_the_server_refuses_what_the_schema_rules_out_and_takes_what_it_allows(server, catalogue):
    """Every bound of every parameter of every method: just inside, the schema and the server accept
    it (NOT_FOUND: only the ghost models are missing); just outside, both refuse (INVALID_ARGUMENT
    naming the parameter)."""
    checked = 0
    with Client(server.address, timeout=20) as client:
        for name, info in catalogue.items():
            schema = info.params_schema
            base = {"method": "contrastive"} if name == methods.SHARED_CONTRASTIVE else {}
            for key, prop in schema["properties"].items():
                inside, outside = inside_and_outside(prop)
                assert inside and outside, (name, key)
                for value in inside:
                    params = {**base, key: value}
                    assert valid(schema, params), (name, params, errors_of(schema, params))
                    with pytest.raises(errors.NotFound):
                        fit(client, info, params)
                for value in outside:
                    params = {**base, key: value}
                    if key == "method" and name == methods.SHARED and value == "contrastive":
                        continue
                    assert not valid(schema, params), (name, params)
                    with pytest.raises(errors.InvalidArgument) as refused:
                        fit(client, info, params)
                    assert f"parameter {key!r}" in refused.value.details, (name, params, refused.value.details)
                    checked += 1
            # beyond single values: an unknown key, and every two parameters together (alpha with alphas is refused)
            assert not valid(schema, {**base, "no_such_parameter": 1})
            with pytest.raises(errors.InvalidArgument, match="unknown parameters"):
                fit(client, info, {**base, "no_such_parameter": 1})
            for first, second in itertools.combinations(schema["properties"], 2):
                params = {**base, **{k: inside_and_outside(schema["properties"][k])[0][0] for k in (first, second)}}
                with pytest.raises((errors.NotFound, errors.InvalidArgument)) as answer:
                    fit(client, info, params)
                assert valid(schema, params) is isinstance(answer.value, errors.NotFound), (name, params, answer.value)
    assert checked > 150


def test_contrastive_parameters_need_method_contrastive(server, catalogue):
    info = catalogue[methods.SHARED_CONTRASTIVE]
    params = {"temperature": 0.5}
    assert not valid(info.params_schema, params)  # method is required
    with Client(server.address, timeout=20) as client, pytest.raises(errors.InvalidArgument, match="temperature"):
        fit(client, info, params)


BIN = Path(sys.executable).with_name("convergent")


def test_cli_methods_prints_the_servers_catalogue(server, catalogue):
    result = subprocess.run([str(BIN), "methods", "--address", server.address], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = f"\n{result.stdout}"
    for name, info in catalogue.items():
        assert f"\n{name}: {info.summary}" in out, name
        for key, accepted, default, meaning in methods.describe(name):
            line = next(line for line in out.splitlines() if line.startswith(f"  {key} ") and meaning.split(" (")[0] in line
                        or line.startswith(f"  {key} ") and key == "method")
            if key not in ("candidates", "method"):  # the words come back from the schema as the docs write them
                assert accepted in line and f"default {default} " in f"{line} ", (name, key, line)
    assert "auto's candidates, simple to complex: " + " < ".join(methods.CANDIDATES) in result.stdout


def test_cli_methods_without_a_server_says_so(tmp_path):
    down = subprocess.run([str(BIN), "methods", "--address", "127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "cannot reach a convergent server at 127.0.0.1:1" in down.stderr, down.stderr
    markdown = subprocess.run([str(BIN), "methods", "--markdown", "--address", "127.0.0.1:1"], capture_output=True, text=True,
                              timeout=60)  # docs generation: from the installed table, no server
    assert markdown.returncode == 0 and markdown.stdout.strip() == methods.markdown_table().strip()
