"""Reading a client stream of (ids, vectors) messages: upload of anchors and enroll of gallery
items share every rule of it here; what differs (the header's names, how vectors are prepared,
where they go) comes in as callbacks.

Rules: the first message names what the stream writes (later ones may leave those fields empty
or repeat them); at most one message, the final one, is marked ``last``; each message holds at most
``max_vectors_per_message`` vectors and one row per id; ids have 1..``max_id_length``
characters and appear once in the stream. A first message that sets ``ends_with_last`` makes
the ``last`` message required (a stream ending without it was cut short); without it the
client's half-close ends the stream. Nothing is stored while the stream is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from convergent.server.records import ModelRecord
from convergent.server.registry.service import (
    check_message_size,
    check_stream_complete,
    check_stream_ids,
    check_stream_order,
)
from convergent.server.errors import ConvergentError, InvalidInput


@dataclass(frozen=True)
class StreamRules:
    """kind: "upload" / "enroll" (in messages); names: what the header names ("model or anchor
    set"); id_noun: "anchor id" / "id"; duplicate: the error of an id sent twice."""

    kind: str
    names: str
    id_noun: str
    duplicate: type[ConvergentError]


def read_vector_stream(
    chunks: Iterable[Any], rules: StreamRules, max_vectors_per_message: int, max_id_length: int,
    open_header: Callable[[Any], ModelRecord], same_header: Callable[[Any, Any], bool],
    prepare: Callable[[ModelRecord, np.ndarray, int, int], np.ndarray], sink: Callable[[np.ndarray], None],
) -> tuple[Any, ModelRecord, list[str]]:
    """(first message, its model, every id in order) of a complete, valid stream.

    open_header(first message) -> the model (checks the names); same_header(message, first):
    a later message names nothing else; prepare(model, vectors, message number, first row) ->
    checked, prepared vectors; sink(vectors) takes them in stream order.
    """
    header, model = None, None
    seen_last = False
    seen: set[str] = set()
    ids: list[str] = []
    for number, chunk in enumerate(chunks):
        seen_last = check_stream_order(number, chunk.last, seen_last)
        if header is None:
            header, model = chunk, open_header(chunk)
        elif not same_header(chunk, header):
            raise InvalidInput(f"message {number} names another {rules.names} than the first message",
                               reason="STREAM_HEADER_CHANGED", metadata={"message": number})
        check_message_size(number, len(chunk.ids), chunk.vectors.shape[0], max_vectors_per_message)
        check_stream_ids(chunk.ids, seen, max_id_length, rules.id_noun, rules.kind, rules.duplicate)
        if chunk.ids:
            sink(prepare(model, chunk.vectors, number, len(ids)))
            ids.extend(chunk.ids)
    if header is None or model is None:
        raise InvalidInput(f"the {rules.kind} stream is empty: send at least one message", reason="EMPTY_STREAM")
    check_stream_complete(seen_last, promised_last=header.ends_with_last)
    if not ids:
        raise InvalidInput(f"the {rules.kind} holds no vectors", reason="EMPTY_INPUT", field="vectors")
    return header, model, ids
