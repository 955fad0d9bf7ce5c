"""CE-FI's cooperative output layer: a classifier on consensus coordinates, trained by distillation.

Hashimoto et al. 2026 (federated inference via unsupervised consensus embedding): parties map
their own representations into a consensus space learned from shared unlabeled data; an output
layer on that space is trained to reproduce the parties' own predictions on the same unlabeled
data (knowledge distillation, Hinton et al. 2015), and at inference the parties' consensus
embeddings are combined. Here the consensus space is a :class:`SharedSpace` and the head is a
**mixture of softmax regressions, one per teacher**:

    p(c | z) = mean_t softmax(((z - mean) / scale) W_t^T + b_t)

Head t is trained to reproduce teacher t's probabilities ``T_t`` (n, C). The distillation
target of the whole head is the teachers' mean, and a mean of softmaxes is not itself a softmax
of a linear function, so one softmax regression fitted to the mean cannot represent it. On the
digits federation of docs/inference.md (k = 12), one head fitted to the mean scored 0.894
fused; one head per teacher scored 0.919, and 0.933 on the space's default k = min d_m = 64.

Training data of every head: each party's consensus coordinates ``Z_m`` (n, k) *and* their
mean, all with that teacher's targets, so the head serves one party alone and the fused mean
alike. Loss per head: soft-target cross-entropy ``-mean_i sum_c T_tic log p_t(c | z_i)`` plus
``reg * ||W_t||^2``, minimised by L-BFGS (torch, float64, deterministic). Fusion rule at
inference: the mean of the parties' consensus coordinates, then the head.
"""

from __future__ import annotations

import numpy as np

from convergent.server.align._validate import as_matrix
from convergent.server.errors import InvalidInput, NotFitted

FUSION_RULE = "mean of the parties' consensus coordinates, then the head (the mean of its per-teacher softmaxes)"


def combine_teachers(teachers: list[np.ndarray]) -> np.ndarray:
    """The distillation target: the mean of the teachers' probabilities, (n, C) each -> (n, C)."""
    return np.mean(np.stack([np.asarray(t, dtype=np.float64) for t in teachers]), axis=0)


def check_probabilities(P: np.ndarray, name: str, tol: float = 1e-3) -> None:
    """:class:`InvalidInput` unless P (n, C) holds probabilities: >= 0, rows summing to 1 (± tol)."""
    if P.ndim != 2 or P.shape[1] < 2:
        raise InvalidInput(f"{name} must have at least 2 classes (columns), got shape {P.shape}")
    bad = np.flatnonzero((P < -tol).any(axis=1) | (np.abs(P.sum(axis=1) - 1) > tol))
    if bad.size:
        raise InvalidInput(f"{name} are not class probabilities: row {int(bad[0])} sums to "
                           f"{float(P[bad[0]].sum()):.4g} (rows must be >= 0 and sum to 1)")


def _softmax_regression(Zt, T: np.ndarray, reg: float, max_iter: int) -> tuple[np.ndarray, np.ndarray, float]:  # noqa: ANN001
    """(W (C, k), b (C,), final loss) minimising -mean_i sum_c T_ic log softmax(Z W^T + b)_ic
    + reg ||W||^2 by L-BFGS; Zt (n, k) a float64 torch tensor, T (n, C) soft targets."""
    import torch

    Tt = torch.as_tensor(T, dtype=torch.float64)
    W = torch.zeros((T.shape[1], Zt.shape[1]), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(T.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def loss_fn() -> torch.Tensor:
        return -(Tt * torch.log_softmax(Zt @ W.T + b, dim=1)).sum(dim=1).mean() + reg * (W**2).sum()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        loss = float(loss_fn())
    return W.detach().numpy().copy(), b.detach().numpy().copy(), loss


class CooperativeHead:
    """A mixture of per-teacher softmax regressions on consensus coordinates (see the module docstring).

    Learned: ``mean_`` (k,), ``scale_`` (k,), ``weight_`` (T, C, k), ``bias_`` (T, C) for T
    teachers, ``n_views_``, ``n_anchors_``, ``loss_`` (mean final training loss of the heads).
    """

    def __init__(self, reg: float = 1e-3, max_iter: int = 500, random_state: int = 0) -> None:
        self.reg = reg
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, views: list[np.ndarray], targets) -> "CooperativeHead":  # noqa: ANN001
        """views: each party's consensus coordinates of the same n anchors, (n, k) each;
        targets: one teacher's soft labels (n, C), or a list of them (one head each; rows sum to 1)."""
        import torch

        if not views:
            raise InvalidInput("give at least one party's consensus coordinates")
        views = [as_matrix(v, "view").astype(np.float64) for v in views]
        teachers = [targets] if isinstance(targets, np.ndarray) and np.ndim(targets) == 2 else list(targets)
        if not teachers:
            raise InvalidInput("give at least one teacher's probabilities")
        teachers = [as_matrix(t, "targets").astype(np.float64) for t in teachers]
        if len({v.shape for v in views}) != 1 or len({t.shape for t in teachers}) != 1 or views[0].shape[0] != teachers[0].shape[0]:
            raise InvalidInput("every view needs the targets' rows and the same dimensions, every teacher the same classes")
        for t in teachers:
            check_probabilities(t, "targets")
        inputs = [*views, np.mean(views, axis=0)] if len(views) > 1 else views
        Z = np.vstack(inputs)
        self.mean_ = Z.mean(axis=0)
        self.scale_ = Z.std(axis=0)
        self.scale_[self.scale_ < 1e-12] = 1.0
        torch.manual_seed(int(self.random_state))
        Zt = torch.as_tensor((Z - self.mean_) / self.scale_, dtype=torch.float64)
        heads = [_softmax_regression(Zt, np.vstack([T] * len(inputs)), float(self.reg), int(self.max_iter)) for T in teachers]
        weights, biases, losses = zip(*heads)
        self.weight_, self.bias_ = np.stack(weights), np.stack(biases)
        self.loss_ = float(np.mean(losses))
        self.n_views_, self.n_anchors_ = len(views), int(teachers[0].shape[0])
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "weight_"):
            raise NotFitted("CooperativeHead is not fitted yet; call fit first")

    def predict_proba(self, Z) -> np.ndarray:
        """Consensus coordinates Z (n, k) -> class probabilities (n, C), float64, rows sum to 1."""
        self._check_fitted()
        Z = as_matrix(Z, "Z").astype(np.float64)
        if Z.shape[1] != self.weight_.shape[2]:
            raise InvalidInput(f"Z has {Z.shape[1]} columns, the head expects {self.weight_.shape[2]}", reason="DIMENSION_MISMATCH")
        X = (Z - self.mean_) / self.scale_
        out = np.zeros((Z.shape[0], self.weight_.shape[1]))
        for W, b in zip(self.weight_, self.bias_):
            logits = X @ W.T + b
            logits -= logits.max(axis=1, keepdims=True)
            P = np.exp(logits)
            out += P / P.sum(axis=1, keepdims=True)
        return out / len(self.weight_)

    def fuse(self, views: list[np.ndarray]) -> np.ndarray:
        """Several parties' coordinates of the same n items, (n, k) each -> (n, C) by :data:`FUSION_RULE`."""
        if not views:
            raise InvalidInput("give at least one party's consensus coordinates")
        return self.predict_proba(np.mean([np.asarray(v, dtype=np.float64) for v in views], axis=0))

    def export(self) -> dict[str, np.ndarray]:
        """The formula's arrays: p = mean_t softmax(((z - "mean") / "scale") "W"[t]^T + "b"[t]),
        W (T, C, k), b (T, C) for T teachers."""
        self._check_fitted()
        return {"mean": self.mean_.copy(), "scale": self.scale_.copy(), "W": self.weight_.copy(), "b": self.bias_.copy()}

    # persistence --------------------------------------------------------------------------
    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        self._check_fitted()
        params = {"class": type(self).__name__, "hyper": {"reg": float(self.reg), "max_iter": int(self.max_iter),
                  "random_state": int(self.random_state)}, "n_views_": self.n_views_, "n_anchors_": self.n_anchors_,
                  "loss_": self.loss_}
        arrays = {"mean_": self.mean_, "scale_": self.scale_, "weight_": self.weight_, "bias_": self.bias_}
        return params, {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "CooperativeHead":
        if params.get("class") != cls.__name__:
            raise InvalidInput(f"state is for {params.get('class')!r}, not {cls.__name__}")
        try:
            head = cls(**params["hyper"])
            head.n_views_, head.n_anchors_, head.loss_ = params["n_views_"], params["n_anchors_"], params["loss_"]
            for key in ("mean_", "scale_", "weight_", "bias_"):
                setattr(head, key, np.array(arrays[key], dtype=np.float64, order="C"))
            if head.weight_.ndim == 2:  # one softmax regression (stored before heads per teacher)
                head.weight_, head.bias_ = head.weight_[None], head.bias_[None]
        except (KeyError, TypeError) as exc:
            raise InvalidInput(f"incomplete CooperativeHead state: {exc}") from exc
        if head.weight_.ndim != 3:
            raise InvalidInput("CooperativeHead state: weight_ must be (teachers, classes, k)")
        T, C, k = head.weight_.shape
        if head.bias_.shape != (T, C) or head.mean_.shape != (k,) or head.scale_.shape != (k,):
            raise InvalidInput("CooperativeHead state arrays do not match its dimensions")
        return head
