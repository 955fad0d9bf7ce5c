"""Use cases of federated inference (CE-FI): fit a cooperative head on a shared space by
distillation from teacher models, and predict through it from one or more parties' vectors.

Teachers are ordinary models (registered with ``normalize=False``) whose anchor vectors are a
party's class probabilities for those anchors. Nothing here sees a label: the head (one softmax
regression per teacher, averaged) learns to reproduce the teachers' combined predictions (their
mean) from the consensus coordinates of the same anchors, as seen by each party alone and by
their mean. A seeded ``min(20%, 2000)`` of the
anchors is held out to measure, against the combined teachers, how often the head agrees with
them through each party and through all parties; the head is then refitted on all anchors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from convergent.server.errors import FailedPrecondition, InvalidInput
from convergent.server.records import FitRecord
from convergent.server.registry.alignment import MIN_PAIRS, Alignment, new_fit_id
from convergent.server.registry.pair_stats import HELDOUT_CAP, HELDOUT_FRACTION, aligned_anchors
from convergent.server.registry.service import check_model_version, prepare_vectors, valid_name
from convergent.server.storage.protocols import Store

METHOD = "cooperative"


@dataclass(frozen=True)
class Prediction:
    """probabilities (n, C) float32, rows sum to 1; parties: the models combined; rule: how."""

    probabilities: np.ndarray
    parties: list[str]
    rule: str


class Cooperation:
    def __init__(self, store: Store, alignment: Alignment) -> None:
        self.store = store
        self.alignment = alignment

    # ------------------------------------------------------------ fit
    def fit(self, tenant: str, space_id: str, anchor_set: str, teachers: list[str], params: dict) -> FitRecord:
        """Train the head on ``space_id``'s coordinates of ``anchor_set`` to match ``teachers``."""
        from convergent.server.align import heldout_split, methods
        from convergent.server.align.cooperative import CooperativeHead, check_probabilities, combine_teachers

        params = methods.validate_cooperative_params(params)
        valid_name(anchor_set, "anchor set name")
        if not teachers or len(set(teachers)) != len(teachers):
            raise InvalidInput(f"give one or more different teacher models, got {teachers}", reason="MODELS_NOT_DISTINCT",
                               field="teachers")
        space_record = self._space(tenant, space_id)
        parties = list(space_record.params["models"])
        overlap = sorted(set(parties) & set(teachers))
        if overlap:
            raise InvalidInput(f"{overlap} are models of the shared space; teachers are probability models",
                               reason="MODELS_NOT_DISTINCT", field="teachers")
        party_records = [self.store.get_model(tenant, m) for m in parties]
        self.alignment.check_versions(space_record, *party_records)
        teacher_records = []
        for name in teachers:
            valid_name(name, "teacher model")
            record = self.store.get_model(tenant, name)
            if record.normalize:
                raise FailedPrecondition(f"teacher {name!r} normalizes its vectors: register teachers with normalize set to "
                                         "false (their anchor vectors are class probabilities)", field="teachers")
            teacher_records.append(record)
        if len({t.dim for t in teacher_records}) != 1:
            raise FailedPrecondition(f"the teachers have different numbers of classes: {[t.dim for t in teacher_records]}",
                                     field="teachers")
        started = time.perf_counter()
        version, ids, arrays = aligned_anchors(self.store, tenant, anchor_set, [*party_records, *teacher_records])
        if len(ids) < MIN_PAIRS:
            raise FailedPrecondition(f"anchor set {anchor_set!r} holds {len(ids)} anchors embedded by every party and "
                                     f"teacher; a cooperative head needs at least {MIN_PAIRS}", reason="TOO_FEW_ANCHORS",
                                     metadata={"anchor_set": anchor_set, "have": len(ids), "need": MIN_PAIRS})
        for name, P in zip(teachers, arrays[len(parties):]):
            try:
                check_probabilities(P, f"teacher {name!r}'s anchors")
            except InvalidInput as exc:
                raise FailedPrecondition(str(exc), field="teachers") from None
        _, space = self.alignment._load(tenant, space_record.id, space_record)
        views = [np.asarray(space.transform(m, X), dtype=np.float64) for m, X in zip(parties, arrays)]
        teacher_probs = arrays[len(parties):]
        target = combine_teachers(teacher_probs)
        kwargs = {"reg": params.get("reg", 1e-3), "max_iter": params.get("max_iter", 500), "random_state": params.get("seed", 0)}
        held = heldout_split(ids, seed=params.get("seed", 0), fraction=HELDOUT_FRACTION, cap=HELDOUT_CAP)
        metrics = self._held_out_metrics(CooperativeHead(**kwargs).fit([v[~held] for v in views], [t[~held] for t in teacher_probs]),
                                         parties, [v[held] for v in views], target[held])
        head = CooperativeHead(**kwargs).fit(views, teacher_probs)
        metrics.update(n_anchors=float(len(ids)), n_heldout=float(held.sum()), n_classes=float(target.shape[1]),
                       fit_seconds=time.perf_counter() - started)
        versions = {r.name: r.version for r in (*party_records, *teacher_records)}
        record = FitRecord(
            id=new_fit_id(), method=METHOD, requested_method=METHOD, source="", source_version=0, target="",
            target_version=0, anchor_set=anchor_set, data_version=version,
            params={**params, "reg": kwargs["reg"], "max_iter": kwargs["max_iter"], "seed": kwargs["random_state"],
                    "space": space_record.id, "models": parties, "teachers": list(teachers),
                    "model_versions": versions, "n_classes": int(target.shape[1])},
            metrics=metrics, warnings=[] if held.sum() >= 50 else [f"only {int(held.sum())} held-out anchors: the metrics are noisy"],
            converged=True, created_at=time.time(),
        )
        state, state_arrays = head.get_state()
        self.alignment.fits.insert(tenant, record, state, state_arrays)
        return record

    @staticmethod
    def _held_out_metrics(head, parties: list[str], views: list[np.ndarray], target: np.ndarray) -> dict[str, float]:  # noqa: ANN001
        """Agreement (argmax equal) and cross-entropy of the head with the combined teachers on
        held-out anchors, through each party alone and through all (higher agreement is better)."""
        truth = target.argmax(axis=1)
        out: dict[str, float] = {}
        for name, P in [*((m, head.predict_proba(v)) for m, v in zip(parties, views)), ("fused", head.fuse(views))]:
            out[f"{name}.agreement"] = float(np.mean(P.argmax(axis=1) == truth))
            out[f"{name}.cross_entropy"] = float(-np.mean(np.sum(target * np.log(np.clip(P, 1e-12, None)), axis=1)))
        return out

    def _space(self, tenant: str, space_id: str) -> FitRecord:
        if not space_id:
            raise InvalidInput("give the shared space's id (from FitSharedSpace)", reason="EMPTY_INPUT", field="space")
        record = self.alignment.fits.get(tenant, space_id)
        if record.method != "shared":
            raise InvalidInput(f"fit {space_id!r} is a {record.method!r} fit, not a shared space", reason="WRONG_FIT",
                               field="space")
        return record

    # ------------------------------------------------------------ predict
    def predict(self, tenant: str, head_id: str, parties: list[tuple[str, int, np.ndarray]]) -> Prediction:
        """Class probabilities of n items from the parties' vectors ((model, version, (n, d_model)), ...)."""
        from convergent.server.align.cooperative import FUSION_RULE

        if not head_id:
            raise InvalidInput("give the cooperative head's id (from FitCooperative)", reason="EMPTY_INPUT", field="head")
        record = self.alignment.fits.get(tenant, head_id)
        if record.method != METHOD:
            raise InvalidInput(f"fit {head_id!r} is a {record.method!r} fit, not a cooperative head", reason="WRONG_FIT",
                               field="head")
        if not parties:
            raise InvalidInput("give at least one party's vectors", reason="EMPTY_INPUT", field="parties")
        names = [p[0] for p in parties]
        if len(set(names)) != len(names):
            raise InvalidInput(f"each party must use a different model, got {names}", reason="MODELS_NOT_DISTINCT",
                               field="parties.model")
        unknown = sorted(set(names) - set(record.params["models"]))
        if unknown:
            raise InvalidInput(f"{unknown} are not parties of this head; it takes {record.params['models']}",
                               reason="UNKNOWN_OPTION", field="parties.model")
        rows = {len(v) for _, _, v in parties}
        if len(rows) != 1:
            raise InvalidInput(f"every party must send the same number of rows, got {sorted(rows)}", reason="LENGTH_MISMATCH",
                               field="parties.vectors")
        models = []
        for name, version, _ in parties:
            valid_name(name, "model name")
            models.append(check_model_version(self.store.get_model(tenant, name), version))
        self.alignment.check_versions(record, *models)
        space_record = self.alignment.fits.get(tenant, record.params["space"])
        _, space = self.alignment._load(tenant, space_record.id, space_record)
        _, head = self.alignment._load(tenant, head_id, record)
        views = [space.transform(m.name, prepare_vectors(m, v, f"{m.name} vectors", field="parties.vectors")) for m, (_, _, v) in zip(models, parties)]
        P = head.fuse(views).astype(np.float32)
        return Prediction(P, names, FUSION_RULE if len(views) > 1 else "the head's softmax of the party's consensus coordinates")
