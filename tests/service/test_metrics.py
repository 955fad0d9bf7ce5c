"""Prometheus metrics: requests by method and status, latencies, fits, stored vectors, indexes."""

from __future__ import annotations

import urllib.request

import pytest

from convergent.client import Client, errors


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def value(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{prefix} not in metrics")


def test_metrics_endpoint(start_server, rng):
    server = start_server(metrics_port=0)
    with Client(server.address) as client:
        client.register_model("a", dim=4)
        client.register_model("b", dim=4)
        with pytest.raises(errors.AlreadyExists):
            client.register_model("a", dim=4)
        ids = [f"x{i}" for i in range(30)]
        for model in ("a", "b"):
            client.upload_anchors(model, anchor_set="s", ids=ids, vectors=rng.standard_normal((30, 4)))
        client.fit_alignment("a", "b", anchor_set="s", method="ridge")
        client.enroll(gallery="g", model="b", ids=ids[:7], vectors=rng.standard_normal((7, 4)))
        client.identify(gallery="g", vectors=rng.standard_normal((2, 4)), model="a", k=1)  # CSLS through the map
        text_after_mapped = scrape(server.metrics.port)
        client.identify(gallery="g", vectors=rng.standard_normal((2, 4)), model="b", k=1)  # cosine, own model
    text = scrape(server.metrics.port)
    assert value(text, 'convergent_requests_total{code="OK",method="RegisterModel"}') == 2
    assert value(text, 'convergent_requests_total{code="ALREADY_EXISTS",method="RegisterModel"}') == 1
    assert value(text, 'convergent_request_seconds_count{method="UploadAnchors"}') == 2
    assert value(text, 'convergent_fit_seconds_count{method="ridge"}') == 1
    assert value(text, 'convergent_stored_vectors{kind="anchors"}') == 60
    assert value(text, 'convergent_stored_vectors{kind="gallery_items"}') == 7
    assert value(text_after_mapped, 'convergent_index_vectors{index="csls"}') == 7
    assert value(text_after_mapped, 'convergent_index_vectors{index="exact"}') == 0  # not built: CSLS did not need it
    assert value(text, 'convergent_index_vectors{index="exact"}') == 7
    assert value(text, 'convergent_index_vectors{index="csls"}') == 7
