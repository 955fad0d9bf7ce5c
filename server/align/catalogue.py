"""The method catalogue of ``ListMethods``: every fit method, the RPC that takes it, a summary
and the JSON Schema (draft 2020-12) of its ``params``, generated from the pydantic parameter
models of :mod:`convergent.server.align.params` (one source for names, types, bounds, defaults)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from convergent.server.align.methods import (
    AUTO,
    CANDIDATES,
    COOPERATIVE,
    OTHER_PARAMS,
    PARAMS,
    SHARED,
    SHARED_CONTRASTIVE,
)
from convergent.wire import FIT_METHODS

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: summaries of the methods beyond FitAlignment's (whose summaries are ``wire.FIT_METHODS``)
OTHER_SUMMARIES: dict[str, str] = {
    SHARED: "one space for N models: MAXVAR generalised CCA from every pair's statistics",
    SHARED_CONTRASTIVE: "a learned space for N models: per-model heads trained by multi-positive InfoNCE",
    COOPERATIVE: "a classifier on a shared space, trained by distillation from teacher models' probabilities",
}
_RPCS = {SHARED: "FitSharedSpace", SHARED_CONTRASTIVE: "FitSharedSpace", COOPERATIVE: "FitCooperative"}
# FitSharedSpace: the value of params["method"] that picks each parameter set (validate_shared_params).
_SPACE_METHODS = {
    SHARED: ({"enum": ["gcca"], "default": "gcca"},
             "the kind of space: \"gcca\" here (\"contrastive\" takes the parameters of \"shared (contrastive)\")"),
    SHARED_CONTRASTIVE: ({"enum": ["contrastive"], "default": "contrastive"}, "the kind of space: \"contrastive\" (required)"),
}


@dataclass(frozen=True)
class MethodInfo:
    """One method of the catalogue: ``name`` as :data:`PARAMS` / :data:`OTHER_PARAMS` key it, the
    RPC that takes it, a one-line summary, the JSON Schema of its ``params`` Struct, and (``auto``
    only) the candidates it chooses among, simple to complex."""

    name: str
    rpc: str
    summary: str
    params_schema: dict
    candidates: tuple[str, ...] = ()


def params_schema(name: str) -> dict:
    """JSON Schema (draft 2020-12) of the ``params`` a method takes, from its pydantic model: every
    property with its type, bounds (:class:`Range`), description and default (absent where the
    server chooses from the data), ``seed`` last as in :func:`describe`; nothing else allowed."""
    model = OTHER_PARAMS[name] if name in OTHER_PARAMS else PARAMS[name]
    generated = model.model_json_schema()
    properties: dict[str, dict] = {}
    for key in sorted(model.model_fields, key=lambda k: k == "seed"):
        prop = {k: v for k, v in generated["properties"][key].items() if k != "title" and not (k == "default" and v is None)}
        if name in _SPACE_METHODS and key == "method":
            fixed, words = _SPACE_METHODS[name]
            prop = {**prop, **fixed, "description": words}
        if "type" not in prop or not prop.get("description"):
            raise ValueError(f"parameter {key!r} of {name!r} needs a Range (its JSON type and bounds) and a description")
        properties[key] = prop
    schema: dict = {"$schema": SCHEMA_DIALECT, "title": name, "type": "object", "properties": properties,
                    "additionalProperties": False}
    if name == SHARED_CONTRASTIVE:
        schema["required"] = ["method"]
    schema.update({k: v for k, v in generated.items() if k in ("not", "required") and k not in schema})
    return schema


@functools.cache
def catalogue() -> tuple[MethodInfo, ...]:
    """Every fit method for ``ListMethods``: FitAlignment's (``auto`` first), then FitSharedSpace's
    and FitCooperative's, each with the JSON Schema of its parameters."""
    return tuple(
        MethodInfo(name=name, rpc=_RPCS.get(name, "FitAlignment"), summary=FIT_METHODS.get(name) or OTHER_SUMMARIES[name],
                   params_schema=params_schema(name), candidates=tuple(CANDIDATES) if name == AUTO else ())
        for name in (*PARAMS, *OTHER_PARAMS)
    )
