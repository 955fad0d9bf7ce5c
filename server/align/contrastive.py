"""A learned shared space for N models: per-model heads trained with a multi-positive InfoNCE loss.

CE-FI's consensus embedding (Hashimoto et al. 2026): the same anchor seen by two parties is a
positive pair, every other anchor in the batch a negative. Each model m gets a head
``f_m(x) = normalize(h_m((x - mean_m) / scale_m))`` into k dims (``h_m`` linear, or one ReLU
hidden layer of ``hidden`` units), trained jointly by AdamW on minibatches of 256 anchors
with the loss (SupCon's multi-positive form, Khosla et al. 2020; InfoNCE, van den Oord et al.
2018) ``-mean_{m,i} mean_{m' != m} log softmax_j(f_m(x_i) . f_{m'}(x_j) / temperature)`` over
every (model, anchor) of the batch but itself.

Back into a model's own space (for ``translate`` and routed identify): a ridge decoder per
model from the consensus coordinates of every model's view of the anchors to that model's
vectors, so ``translate(a, b, X) = decode_b(f_a(X))``. Same interface as
:class:`~convergent.server.align.shared.SharedSpace`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from convergent.server.align._validate import as_matrix, out_dtype
from convergent.server.align.shared import ModelSpace
from convergent.server.errors import InvalidInput

BATCH = 256


class ContrastiveSpace(ModelSpace):
    """Learned: ``models_``, ``dims_``, ``means_``/``scales_`` (per model), ``heads_`` (per model:
    list of (weight, bias) layers, the last into k dims), ``decoders_`` (per model: {"W" (d_m, k),
    "b" (d_m,)}), ``n_components_``, ``n_anchors_``, ``loss_`` (final epoch's mean loss)."""

    def __init__(self, n_components: int = 64, temperature: float = 0.1, epochs: int = 200, lr: float = 3e-3,
                 weight_decay: float = 1e-4, hidden: int = 0, random_state: int = 0) -> None:
        self.n_components = n_components
        self.temperature = temperature
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.hidden = hidden
        self.random_state = random_state

    def fit(self, views: Mapping[str, np.ndarray]) -> "ContrastiveSpace":
        """views: model -> (n, d_m), row i of every model the same anchor (n >= 2, >= 2 models)."""
        import torch

        from convergent.server.align.maps import RidgeMap

        if len(views) < 2:
            raise InvalidInput("a shared space needs at least 2 models")
        names = list(views)
        arrays = [as_matrix(views[m], f"views[{m!r}]", min_rows=2).astype(np.float64) for m in names]
        if len({a.shape[0] for a in arrays}) != 1:
            raise InvalidInput("every model needs the same anchors (rows)")
        n, k = arrays[0].shape[0], int(self.n_components)
        dims = [a.shape[1] for a in arrays]
        self.means_ = {m: a.mean(axis=0) for m, a in zip(names, arrays)}
        self.scales_ = {m: float(np.sqrt(np.mean((a - a.mean(axis=0)) ** 2))) or 1.0 for m, a in zip(names, arrays)}
        torch.manual_seed(int(self.random_state))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small products: one thread is faster (see mlp.py)
        try:
            nets = [self._net(torch, d, k) for d in dims]
            inputs = [torch.as_tensor((a - self.means_[m]) / self.scales_[m], dtype=torch.float32) for m, a in zip(names, arrays)]
            opt = torch.optim.AdamW([p for net in nets for p in net.parameters()], lr=float(self.lr),
                                    weight_decay=float(self.weight_decay))
            generator = torch.Generator().manual_seed(int(self.random_state))
            M = len(nets)
            for _ in range(int(self.epochs)):
                losses = []
                for idx in torch.randperm(n, generator=generator).split(BATCH):
                    if len(idx) < 2:
                        continue
                    Z = torch.cat([torch.nn.functional.normalize(net(x[idx]), dim=1) for net, x in zip(nets, inputs)])
                    b = len(idx)
                    S = (Z @ Z.T) / float(self.temperature)
                    eye = torch.eye(M * b, dtype=torch.bool)
                    S = S.masked_fill(eye, float("-inf"))
                    item = torch.arange(M * b) % b
                    positive = (item[:, None] == item[None, :]) & ~eye
                    log_p = S - torch.logsumexp(S, dim=1, keepdim=True)
                    loss = -(log_p.masked_fill(~positive, 0.0).sum(dim=1) / positive.sum(dim=1)).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
            self.loss_ = float(np.mean(losses)) if losses else float("nan")
        finally:
            torch.set_num_threads(threads)
        self.models_, self.dims_ = names, dims  # fitted from here on (ModelSpace._check_fitted)
        self.heads_ = {m: [(layer.weight.detach().numpy().astype(np.float64), layer.bias.detach().numpy().astype(np.float64))
                           for layer in net if isinstance(layer, torch.nn.Linear)] for m, net in zip(names, nets)}
        self.n_components_, self.n_anchors_ = k, n
        coords = np.vstack([self.transform(m, a) for m, a in zip(names, arrays)])
        self.decoders_ = {}
        for m, a in zip(names, arrays):
            decoder = RidgeMap().fit(coords, np.vstack([a] * M))
            self.decoders_[m] = {"W": decoder.coef_, "b": decoder.intercept_}
        return self

    def _net(self, torch, d: int, k: int):  # noqa: ANN001, ANN202
        if int(self.hidden) > 0:
            return torch.nn.Sequential(torch.nn.Linear(d, int(self.hidden)), torch.nn.ReLU(), torch.nn.Linear(int(self.hidden), k))
        return torch.nn.Sequential(torch.nn.Linear(d, k))

    # using --------------------------------------------------------------------------------
    def transform(self, model: str, X) -> np.ndarray:
        """Model rows X (n, d_m) -> unit consensus coordinates (n, k); float32 in -> float32 out, else float64."""
        X = self._rows(model, X)
        h = (X.astype(np.float64, copy=False) - self.means_[model]) / self.scales_[model]
        layers = self.heads_[model]
        for weight, bias in layers[:-1]:
            h = np.maximum(h @ weight.T + bias, 0.0)
        h = h @ layers[-1][0].T + layers[-1][1]
        h /= np.clip(np.linalg.norm(h, axis=1, keepdims=True), 1e-12, None)
        return h.astype(out_dtype(X), copy=False)

    def to_model(self, model: str, Z) -> np.ndarray:
        """Consensus coordinates Z (n, k) -> model m's space (n, d_m) by its ridge decoder."""
        self._model(model)
        Z = as_matrix(Z, "Z")
        if Z.shape[1] != self.n_components_:
            raise InvalidInput(f"Z has {Z.shape[1]} columns, the shared space has {self.n_components_}", reason="DIMENSION_MISMATCH")
        dec = self.decoders_[model]
        return (Z.astype(np.float64, copy=False) @ dec["W"].T + dec["b"]).astype(out_dtype(Z), copy=False)

    def export(self) -> dict[str, np.ndarray]:
        """Per model m: "<m>.mean", "<m>.scale", "<m>.layer{l}_weight", "<m>.layer{l}_bias" (the head;
        the last layer maps into k dims, then rows are L2-normalised), "<m>.decoder_W" (d_m, k),
        "<m>.decoder_b"."""
        return self.get_state()[1]

    # persistence --------------------------------------------------------------------------
    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        self._check_fitted()
        params = {"class": type(self).__name__, "models": list(self.models_), "dims": list(self.dims_),
                  "n_components": self.n_components_, "n_anchors": self.n_anchors_, "loss": self.loss_,
                  "layers": {m: len(self.heads_[m]) for m in self.models_},
                  "hyper": {k: getattr(self, k) for k in ("n_components", "temperature", "epochs", "lr", "weight_decay",
                                                          "hidden", "random_state")}}
        arrays: dict[str, np.ndarray] = {}
        for m in self.models_:
            arrays[f"{m}.mean"], arrays[f"{m}.scale"] = self.means_[m], np.array([self.scales_[m]])
            for i, (weight, bias) in enumerate(self.heads_[m]):
                arrays[f"{m}.layer{i}_weight"], arrays[f"{m}.layer{i}_bias"] = weight, bias
            arrays[f"{m}.decoder_W"], arrays[f"{m}.decoder_b"] = self.decoders_[m]["W"], self.decoders_[m]["b"]
        return params, {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "ContrastiveSpace":
        if params.get("class") != cls.__name__:
            raise InvalidInput(f"state is for {params.get('class')!r}, not {cls.__name__}")
        try:
            space = cls(**params["hyper"])
            space.models_, space.dims_ = list(params["models"]), [int(d) for d in params["dims"]]
            space.n_components_, space.n_anchors_, space.loss_ = params["n_components"], params["n_anchors"], params["loss"]
            get = lambda key: np.array(arrays[key], dtype=np.float64, order="C")  # noqa: E731
            space.means_ = {m: get(f"{m}.mean") for m in space.models_}
            space.scales_ = {m: float(get(f"{m}.scale")[0]) for m in space.models_}
            space.heads_ = {m: [(get(f"{m}.layer{i}_weight"), get(f"{m}.layer{i}_bias")) for i in range(int(params["layers"][m]))]
                            for m in space.models_}
            space.decoders_ = {m: {"W": get(f"{m}.decoder_W"), "b": get(f"{m}.decoder_b")} for m in space.models_}
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"incomplete ContrastiveSpace state: {exc}") from exc
        for m, d in zip(space.models_, space.dims_):
            if space.heads_[m][0][0].shape[1] != d or space.decoders_[m]["W"].shape != (d, space.n_components_):
                raise InvalidInput("ContrastiveSpace state arrays do not match its dimensions")
        return space
