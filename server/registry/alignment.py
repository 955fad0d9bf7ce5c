"""Use cases of alignment: fit a source -> target map on paired anchors, keep it, apply it.

The statistics of all pairs come from :mod:`convergent.server.registry.pair_stats`. Each fit holds out
``min(20% of pairs, 2000)`` anchors chosen by a seeded hash of their ids, scores the map (or
every ``auto`` candidate) on them, and refits on all pairs.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict

import numpy as np

from convergent.server.errors import FailedPrecondition, InvalidInput, NotFitted, NotFound, ResourceExhausted, SpaceMismatch
from convergent.server.records import AtlasRecord, FitRecord, ModelRecord, Page
from convergent.server.registry.pair_stats import PairStatistics
from convergent.server.registry.service import check_model_version, l2_normalize_rows, prepare_vectors, valid_name
from convergent.server.registry import paging
from convergent.server.settings import ServerSettings
from convergent.server.storage.protocols import Store

log = logging.getLogger("convergent.alignment")

MIN_PAIRS = 10  # below this neither a map nor its held-out diagnostics mean anything


def check_fit_memory(method: str, params: dict, d_x: int, d_y: int, limit: int, n_models: int = 2) -> None:
    """:class:`ResourceExhausted` when the fit's estimated memory is over the server's ``limit``."""
    from convergent.server.align.methods import fit_memory_bytes

    need = fit_memory_bytes(method, params, d_x, d_y, n_models)
    if need > limit:
        raise ResourceExhausted(
            f"a {method} fit of {d_x} -> {d_y} dims with these parameters needs about {need / 2**30:.1f} GiB, "
            f"over this server's limit of {limit / 2**30:.1f} GiB (max_fit_bytes): use fewer alphas or components",
            reason="FIT_TOO_LARGE", metadata={"limit": "max_fit_bytes", "value": limit, "estimated": need},
        )


def _learned_params(estimator) -> dict:  # noqa: ANN001
    """Hyper-parameters as fitted, including the chosen ones (e.g. ridge alpha, spectral groups)."""
    params, _ = estimator.get_state()
    learned = {k: v for k, v in params["hyper"].items() if v is not None and k != "alphas"}
    for fitted, name in (("alpha_", "alpha"), ("n_groups_", "n_groups")):
        if params.get(fitted) is not None:
            learned[name] = params[fitted]
    return learned


def _estimator_metrics(estimator) -> dict[str, float]:  # noqa: ANN001
    """Method-specific numbers of a fitted map (unit matching: matched correlations)."""
    metrics = {}
    if hasattr(estimator, "matched_correlation_summary"):
        for key, value in estimator.matched_correlation_summary().items():
            metrics[f"matched_correlation_{key}"] = float(value)
    if hasattr(estimator, "mean_matched_correlation_"):
        metrics["mean_matched_correlation"] = float(estimator.mean_matched_correlation_)
    return metrics


def new_fit_id() -> str:
    """Ids sort by creation time (milliseconds) and never repeat (random suffix)."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


class Alignment:
    """Fits, their storage and their use (transform, export)."""

    def __init__(self, store: Store, settings: ServerSettings) -> None:
        self.store = store
        self.fits = store.fits
        self.settings = settings
        from convergent.server.align import resolve_device

        self.device = resolve_device(settings.device)
        self.pairs = PairStatistics(store, self.device)
        self.stats_cache = self.pairs.cache
        self.snapshot = self.pairs.snapshot
        self._estimators: OrderedDict[str, object] = OrderedDict()
        self._estimators_lock = threading.Lock()

    # ------------------------------------------------------------ fitting
    def fit(self, tenant: str, source: str, target: str, anchor_set: str, method: str, params: dict) -> FitRecord:
        """Fit, measure on held-out pairs, refit on all pairs, store; returns the stored fit."""
        from convergent.server.align import diagnostics, fit_auto_stats, methods

        method = method or "auto"
        params = methods.validate_params(method, params)
        for name, what in ((source, "source model"), (target, "target model"), (anchor_set, "anchor set name")):
            valid_name(name, what)
        if source == target:
            raise InvalidInput("source and target must be different models", reason="MODELS_NOT_DISTINCT", field="target")
        src, tgt = self.store.get_model(tenant, source), self.store.get_model(tenant, target)
        check_fit_memory(method, params, src.dim, tgt.dim, self.settings.max_fit_bytes)
        started = time.perf_counter()
        snap = self.snapshot(tenant, anchor_set, src, tgt, seed=params.get("seed", 0), products=methods.products(method),
                             train_pairs=lambda n: methods.training_pairs(method, params, n))
        n_pairs = snap.stats.n
        if n_pairs < MIN_PAIRS:
            raise FailedPrecondition(
                f"anchor set {anchor_set!r} holds {n_pairs} anchors embedded by both {source!r} and "
                f"{target!r}; a fit needs at least {MIN_PAIRS}",
                reason="TOO_FEW_ANCHORS", metadata={"anchor_set": anchor_set, "have": n_pairs, "need": MIN_PAIRS},
            )
        fit_stats = snap.stats.copy().subtract(snap.X_held, snap.Y_held)
        metrics: dict[str, float] = {}
        if method == "auto":
            candidates = params.get("candidates") or methods.default_candidates(n_pairs)
            result = fit_auto_stats(fit_stats, snap.X_held, snap.Y_held, refit=False, candidates=candidates, pairs=snap.train)
            chosen = methods.CANDIDATES[result.name].method
            if methods.METHODS[chosen].refit:
                estimator = methods.fit_candidate(result.name, snap.stats, snap.train)
            else:  # served as measured on the held-out anchors
                estimator = result.estimator
            diag = result.diagnostics
            for name, score in result.scores.items():
                metrics[f"auto.{name}.margin"] = score
                metrics[f"auto.{name}.stderr"] = result.stderr[name]
                metrics[f"auto.{name}.gap"] = result.gap[name]
                metrics[f"auto.{name}.gap_allowed"] = result.allowed[name]
            learned = {"candidate": result.name, "candidates": list(candidates), **_learned_params(estimator)}
        else:
            chosen = method
            held_out_fit = methods.fit(method, params, fit_stats, heldout=(snap.X_held, snap.Y_held), pairs=snap.train)
            # the condition number of Sxx needs full statistics (not built for unit matching)
            diag = diagnostics(held_out_fit, snap.X_held, snap.Y_held, fit_stats.n, src.dim,
                               fit_stats=fit_stats if fit_stats.products == "full" else None)
            if methods.METHODS[method].uses_heldout:  # lambda chosen on held-out pairs, then all pairs at it
                params = {**params, "alpha": held_out_fit.alpha_}
                params.pop("alphas", None)
            if methods.METHODS[method].refit:
                estimator = methods.fit(method, params, snap.stats, pairs=snap.train)
            else:  # served as measured on the held-out anchors
                estimator = held_out_fit
            learned = _learned_params(estimator)
            metrics.update(_estimator_metrics(estimator))
        learned["seed"] = params.get("seed", 0)  # the held-out split's seed, given or not
        warnings = list(diag.pop("warnings", []))
        for name, value in diag.items():
            if value is not None:
                metrics[name] = float(value)
        metrics["n_anchors"] = float(n_pairs)
        metrics["fit_seconds"] = time.perf_counter() - started
        if diag.get("n_heldout", 0) < 50:
            warnings.append(f"only {diag.get('n_heldout')} held-out anchors: the diagnostics are noisy")
        state, arrays = estimator.get_state()
        record = FitRecord(
            id=new_fit_id(), method=chosen, requested_method=method,
            source=source, source_version=src.version, target=target, target_version=tgt.version,
            anchor_set=anchor_set, data_version=snap.data_version, params=learned,
            metrics=metrics, warnings=warnings, converged=bool(getattr(estimator, "converged_", True)),
            created_at=time.time(),
        )
        self.fits.insert(tenant, record, state, arrays)
        self.pairs.store_computed(snap)
        return record

    def fit_shared(self, tenant: str, models: list[str], anchor_set: str, params: dict) -> FitRecord:
        """One shared space for N >= 2 models (:func:`convergent.server.registry.shared_spaces.fit_shared`)."""
        from convergent.server.registry.shared_spaces import fit_shared

        return fit_shared(self, tenant, models, anchor_set, params)

    def atlas(self, tenant: str, anchor_set: str) -> AtlasRecord:
        """The compatibility atlas of a set (:func:`convergent.server.registry.atlas.atlas`)."""
        from convergent.server.registry.atlas import atlas

        return atlas(self, tenant, anchor_set)

    # ------------------------------------------------------------ reading fits
    def with_staleness(self, tenant: str, record: FitRecord) -> FitRecord:
        """The record with ``stale`` set: its anchor set or one of its models changed since."""
        version = self.store.anchor_set_version(tenant, record.anchor_set)
        expected = _model_versions(record)
        current = {}
        for name in expected:
            try:
                current[name] = self.store.get_model(tenant, name).version
            except NotFound:
                current[name] = None
        stale = version != record.data_version or current != expected
        return record.model_copy(update={"stale": stale})

    def get_fit(self, tenant: str, fit_id: str) -> FitRecord:
        return self.with_staleness(tenant, self.fits.get(tenant, fit_id))

    def list_fits(self, tenant: str, page_size: int, page_token: str, source: str = "", target: str = "") -> Page:
        limit = paging.page_size(page_size, self.settings.default_page_size, self.settings.max_page_size)
        items = self.fits.list(tenant, paging.decode_token(page_token), limit + 1, source, target)
        page = paging.make_page(items, limit, key="id")
        return page.model_copy(update={"items": tuple(self.with_staleness(tenant, r) for r in page.items)})

    def delete_fit(self, tenant: str, fit_id: str) -> None:
        self.fits.delete(tenant, fit_id)
        with self._estimators_lock:
            self._estimators.pop(fit_id, None)

    def _load(self, tenant: str, fit_id: str, record: FitRecord | None = None):  # noqa: ANN202
        """(record, estimator); estimators are immutable, so they are cached by fit id.
        ``record``: the fit's record when the caller has read it for this tenant already."""
        from convergent.server.align import estimator_from_state

        record = record if record is not None else self.fits.get(tenant, fit_id)
        with self._estimators_lock:
            estimator = self._estimators.get(fit_id)
        if estimator is None:
            _, state, arrays = self.fits.load(tenant, fit_id)
            if record.method == "shared" and state.get("class") == "ContrastiveSpace":
                from convergent.server.align.contrastive import ContrastiveSpace

                estimator = ContrastiveSpace.from_state(state, arrays)
            elif record.method == "shared":
                from convergent.server.align import SharedSpace

                estimator = SharedSpace.from_state(state, arrays)
            elif record.method == "cooperative":
                from convergent.server.align.cooperative import CooperativeHead

                estimator = CooperativeHead.from_state(state, arrays)
            else:
                estimator = estimator_from_state(state, arrays)
            with self._estimators_lock:
                self._estimators[fit_id] = estimator
                while len(self._estimators) > 64:
                    self._estimators.popitem(last=False)
        return record, estimator

    def export(self, tenant: str, fit_id: str) -> tuple[FitRecord, dict[str, np.ndarray]]:
        record, estimator = self._load(tenant, fit_id)
        return self.with_staleness(tenant, record), estimator.export()

    # ------------------------------------------------------------ routes and transform
    @staticmethod
    def check_versions(record: FitRecord, *models: ModelRecord) -> None:
        """:class:`SpaceMismatch` unless the fit was computed for these models' current versions."""
        expected = _model_versions(record)
        for model in models:
            if expected.get(model.name) != model.version:
                raise SpaceMismatch(
                    f"fit {record.id!r} was computed for {model.name!r} v{expected.get(model.name)}; "
                    f"the model is now v{model.version}: fit again", reason="STALE_FIT",
                    metadata={"fit": record.id, "model": model.name, "fitted": expected.get(model.name),
                              "current": model.version},
                )

    def latest_route(self, tenant: str, src: ModelRecord, tgt: ModelRecord) -> FitRecord:
        """The newest fit ``src`` -> ``tgt``, else the newest shared space holding both.

        Reverse fits are never used. :class:`NotFitted` if there is no route,
        :class:`SpaceMismatch` if the route was fitted on older model versions.
        """
        record = self.fits.latest(tenant, src.name, tgt.name)
        if record is None:
            record = self.fits.latest_shared(tenant, [src.name, tgt.name])
        if record is None:
            raise NotFitted(
                f"no fit from {src.name!r} to {tgt.name!r} (and no shared space holding both): fit one first "
                f"(FitAlignment with source {src.name!r}, target {tgt.name!r} and an anchor set)",
                reason="NO_ROUTE", metadata={"source": src.name, "target": tgt.name},
            )
        self.check_versions(record, src, tgt)
        return record

    def apply(self, tenant: str, record: FitRecord, X: np.ndarray, src: ModelRecord, tgt: ModelRecord) -> np.ndarray:
        """Map prepared vectors of ``src`` (n, d_src) into ``tgt`` through a fit or a shared space:
        (n, d_tgt) float32, L2-normalised if the target model normalises (a zero row stays zero)."""
        Z = self.map_prepared(tenant, record, X, src, tgt)
        return l2_normalize_rows(Z, strict=False) if tgt.normalize else Z

    def map_prepared(self, tenant: str, record: FitRecord, X: np.ndarray, src: ModelRecord, tgt: ModelRecord) -> np.ndarray:
        """Vectors already checked and prepared by :func:`prepare_vectors` (the one vector
        boundary of a use case) through the route: (n, d_tgt) float32, not normalised."""
        _, estimator = self._load(tenant, record.id, record)
        if record.method == "shared":
            Z = estimator.translate(src.name, tgt.name, X)
        else:
            Z = estimator.transform_checked(X)
        return np.asarray(Z, dtype=np.float32)

    def transform(
        self, tenant: str, source: str, source_version: int, target: str, fit_id: str, vectors: np.ndarray
    ) -> tuple[np.ndarray, FitRecord, ModelRecord | None]:
        """Map source vectors (n, d_source) into the target space: (n, d_target) float32.

        ``target`` is a model, or ``shared:<fit id>`` for a shared space ((n, k) coordinates;
        the returned target model is then None). Inputs are L2-normalised if the source model
        normalises, outputs if the target model does. The returned record's ``stale`` is not
        computed (a hot path; ``get_fit`` tells).
        """
        valid_name(source, "source model")
        src = check_model_version(self.store.get_model(tenant, source), source_version)
        if target.startswith("shared:") or (fit_id and not target and self.fits.get(tenant, fit_id).method == "shared"):
            record = self.fits.get(tenant, target.removeprefix("shared:") or fit_id)
            if record.method != "shared" or source not in record.params["models"]:
                raise InvalidInput(f"fit {record.id!r} is not a shared space holding {source!r}", reason="WRONG_FIT",
                                   field="fit_id" if fit_id and not target else "target")
            self.check_versions(record, src)
            _, space = self._load(tenant, record.id, record)
            Z = np.asarray(space.transform(source, prepare_vectors(src, vectors)), dtype=np.float32)
            return Z, record, None
        if fit_id:
            record = self.fits.get(tenant, fit_id)
            if record.source != source or (target and record.target != target):
                raise InvalidInput(
                    f"fit {fit_id!r} maps {record.source!r} -> {record.target!r}, not {source!r} -> {target or record.target!r}",
                    reason="WRONG_FIT", field="fit_id",
                )
            tgt = self.store.get_model(tenant, record.target)
            self.check_versions(record, src, tgt)
        else:
            valid_name(target, "target model")
            tgt = self.store.get_model(tenant, target)
            record = self.latest_route(tenant, src, tgt)
        X = prepare_vectors(src, vectors)
        return self.apply(tenant, record, X, src, tgt), record, tgt


def _model_versions(record: FitRecord) -> dict[str, int]:
    """Model name -> version the fit was computed for."""
    if "model_versions" in record.params:  # a shared space or a cooperative head
        return dict(record.params["model_versions"])
    return {record.source: record.source_version, record.target: record.target_version}
