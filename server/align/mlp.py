"""A learned map: ridge plus a small residual MLP, ``y = W x + b + g(x)`` (torch for training).

Drift-Adapter (EMNLP 2025) puts a residual MLP on top of a linear map between two embedding
models and recovers most of a re-embedded index's recall when the relation is not linear.
Here the linear part is :class:`~convergent.server.align.maps.RidgeMap` fitted on the pair
statistics (all fitting anchors); the residual ``g`` is trained on a sample of the fitting
pairs to predict what the linear part misses:

``z = (x - mean_x) / scale_x``, ``h_0 = z``, ``h_{l+1} = relu(h_l A_l^T + c_l)`` for
``l < depth``, ``g(x) = out_scale * (h_depth A_out^T + c_out)``.

The output layer starts at zero, so training starts from the ridge map itself. Adam with
decoupled weight decay (AdamW), minibatches of 256, at most ``epochs`` passes; a seeded
``validation_fraction`` of the training sample is held back and training stops ``patience``
epochs after its mean squared error last improved, keeping the best epoch's weights (if no
epoch beats the ridge map, g stays zero). Nothing of the caller's held-out anchors is used,
so ``auto`` can score the map on them like every other candidate.

``transform`` runs in numpy (float64), so a served map needs no torch and ``export()`` gives
exactly the arrays of the formula: "W" (d_y, d_x) and "b" (d_y,) of the linear part,
"mlp_mean" (d_x,), "mlp_scale" (1,), "mlp_layer{l}_weight" (h, d_in), "mlp_layer{l}_bias" (h,),
"mlp_out_weight" (d_y, h), "mlp_out_bias" (d_y,), "mlp_out_scale" (1,).
"""

from __future__ import annotations

import numpy as np

from convergent.server.align._validate import as_pair, out_dtype
from convergent.server.align.maps import RidgeMap, _AffineMap
from convergent.server.align.stats import PairedStats
from convergent.server.errors import InvalidInput

BATCH = 256
MIN_TRAIN = 20  # pairs left for training after the validation split
# Below this many multiply-adds per minibatch step one CPU thread is faster than several (measured:
# a 8 -> 256 -> 32 network took 6.7 ms per step on one thread, 57 ms on two of a busy 2-core machine).
ONE_THREAD_BELOW = 20_000_000


class ResidualMLPMap(_AffineMap):
    """Ridge + residual MLP (see the module docstring). ``fit(X, Y)`` (n, d_x), (n, d_y), or
    ``fit_pairs(stats, X, Y)``: the linear part from ``stats``, the residual from the pairs.

    Learned: ``coef_`` (d_y, d_x), ``intercept_`` (d_y,), ``alpha_`` (the ridge penalty),
    ``layers_`` [(weight (h, d_in), bias (h,)), ...], ``out_weight_`` (d_y, h),
    ``out_bias_`` (d_y,), ``mean_x_``, ``scale_x_``, ``out_scale_``, ``epochs_run_``,
    ``best_epoch_`` (0 = the ridge map itself was best), ``validation_mse_`` (of the residual,
    per epoch, in units of ``out_scale_``²), ``n_train_``.
    """

    _hyper = ("hidden", "depth", "epochs", "lr", "weight_decay", "patience", "validation_fraction", "max_train_pairs",
              "random_state", "device")
    _state_arrays = ("coef_", "intercept_", "mean_x_", "out_weight_", "out_bias_", "validation_mse_")
    _state_scalars = ("alpha_", "scale_x_", "out_scale_", "epochs_run_", "best_epoch_", "n_train_")

    def __init__(self, hidden: int = 256, depth: int = 1, epochs: int = 300, lr: float = 3e-3,
                 weight_decay: float = 1e-4, patience: int = 30, validation_fraction: float = 0.1,
                 max_train_pairs: int = 20_000, random_state: int = 0, device: str = "cpu"):
        self.hidden = hidden
        self.depth = depth
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.max_train_pairs = max_train_pairs
        self.random_state = random_state
        self.device = device

    # fitting ------------------------------------------------------------------------------
    def fit(self, X, Y) -> "ResidualMLPMap":
        X, Y = as_pair(X, Y)
        return self.fit_pairs(PairedStats.from_arrays(X, Y), X, Y)

    def fit_stats(self, stats: PairedStats) -> "ResidualMLPMap":
        raise InvalidInput("the mlp map is trained on anchor pairs, not on their statistics alone: use fit_pairs")

    def fit_pairs(self, stats: PairedStats, X, Y) -> "ResidualMLPMap":
        """Linear part from ``stats`` (every fitting anchor), residual trained on the pairs
        X (m, d_x), Y (m, d_y) (all of them or a sample; a seeded ``max_train_pairs`` of them
        when more are given)."""
        X, Y = as_pair(X, Y)
        if len(X) > int(self.max_train_pairs):
            keep = np.sort(np.random.default_rng(self.random_state).choice(len(X), int(self.max_train_pairs), replace=False))
            X, Y = X[keep], Y[keep]
        self._start_fit(stats, 2)
        if (X.shape[1], Y.shape[1]) != (stats.d_x, stats.d_y):
            raise InvalidInput("the training pairs' dimensions differ from the statistics'")
        ridge = RidgeMap().fit_stats(stats)
        self.coef_, self.intercept_, self.alpha_ = ridge.coef_, ridge.intercept_, ridge.alpha_
        X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
        residual = Y64 - (X64 @ self.coef_.T + self.intercept_)
        self.mean_x_ = X64.mean(axis=0)
        self.scale_x_ = float(np.sqrt(np.mean((X64 - self.mean_x_) ** 2))) or 1.0
        self.out_scale_ = float(np.sqrt(np.mean(residual**2))) or 1.0
        self._train((X64 - self.mean_x_) / self.scale_x_, residual / self.out_scale_)
        return self

    def _train(self, Z: np.ndarray, R: np.ndarray) -> None:
        import torch

        from convergent.server.align.device import resolve_device

        device = resolve_device(self.device)
        width = int(self.hidden)
        step = BATCH * width * (Z.shape[1] + R.shape[1] + width * (int(self.depth) - 1))
        threads = torch.get_num_threads()
        if device == "cpu" and step < ONE_THREAD_BELOW:
            torch.set_num_threads(1)
        try:
            self._train_on(torch, device, Z, R)
        finally:
            torch.set_num_threads(threads)

    def _train_on(self, torch, device: str, Z: np.ndarray, R: np.ndarray) -> None:  # noqa: ANN001
        rng = np.random.default_rng(self.random_state)
        order = rng.permutation(len(Z))
        n_val = max(1, int(round(len(Z) * float(self.validation_fraction))))
        if len(Z) - n_val < MIN_TRAIN:
            raise InvalidInput(f"the mlp map needs at least {MIN_TRAIN + n_val} training pairs, got {len(Z)}")
        val, train = order[:n_val], order[n_val:]
        torch.manual_seed(int(self.random_state))
        width, d_in, d_out = int(self.hidden), Z.shape[1], R.shape[1]
        layers: list[torch.nn.Module] = []
        for _ in range(int(self.depth)):
            layers += [torch.nn.Linear(d_in, width), torch.nn.ReLU()]
            d_in = width
        out = torch.nn.Linear(d_in, d_out)
        torch.nn.init.zeros_(out.weight)
        torch.nn.init.zeros_(out.bias)
        net = torch.nn.Sequential(*layers, out).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        Zt, Rt, Zv, Rv = as_t(Z[train]), as_t(R[train]), as_t(Z[val]), as_t(R[val])
        generator = torch.Generator().manual_seed(int(self.random_state))

        def val_mse() -> float:
            with torch.no_grad():
                return float(torch.mean((net(Zv) - Rv) ** 2))

        best, best_epoch, best_state, history = val_mse(), 0, None, []
        epoch = 0
        for epoch in range(1, int(self.epochs) + 1):
            net.train()
            for idx in torch.randperm(len(Zt), generator=generator).split(BATCH):
                idx = idx.to(device)
                opt.zero_grad()
                loss = torch.mean((net(Zt[idx]) - Rt[idx]) ** 2)
                loss.backward()
                opt.step()
            net.eval()
            current = val_mse()
            history.append(current)
            if current < best:
                best, best_epoch = current, epoch
                best_state = [p.detach().cpu().numpy().astype(np.float64) for p in net.parameters()]
            elif epoch - best_epoch >= int(self.patience):
                break
        linear = [m for m in net if isinstance(m, torch.nn.Linear)]
        if best_state is None:  # the ridge map alone was best: g = 0
            best_state = []
            for m in linear[:-1]:
                best_state += [m.weight.detach().cpu().numpy().astype(np.float64), m.bias.detach().cpu().numpy().astype(np.float64)]
            best_state += [np.zeros((d_out, d_in)), np.zeros(d_out)]
        pairs = [(best_state[2 * i], best_state[2 * i + 1]) for i in range(len(linear))]
        self.layers_ = [(np.ascontiguousarray(w), np.ascontiguousarray(b)) for w, b in pairs[:-1]]
        self.out_weight_, self.out_bias_ = pairs[-1]
        self.epochs_run_, self.best_epoch_, self.n_train_ = epoch, best_epoch, int(len(train))
        self.validation_mse_ = np.asarray(history, dtype=np.float64)

    # using --------------------------------------------------------------------------------
    def residual(self, X) -> np.ndarray:
        """g(X) (n, d_y), float64."""
        return self._residual(self._source(X))

    def _residual(self, X: np.ndarray) -> np.ndarray:
        h = (X.astype(np.float64, copy=False) - self.mean_x_) / self.scale_x_
        for weight, bias in self.layers_:
            h = np.maximum(h @ weight.T + bias, 0.0)
        return self.out_scale_ * (h @ self.out_weight_.T + self.out_bias_)

    def _map(self, X: np.ndarray) -> np.ndarray:
        """W x + b + g(x) of rows X (n, d_x) -> (n, d_y); float32 in -> float32 out, else float64."""
        Y = X.astype(np.float64, copy=False) @ self.coef_.T + self.intercept_ + self._residual(X)
        return Y.astype(out_dtype(X), copy=False)

    def export(self) -> dict[str, np.ndarray]:
        out = super().export()
        out.update(mlp_mean=self.mean_x_.copy(), mlp_scale=np.array([self.scale_x_]),
                   mlp_out_weight=self.out_weight_.copy(), mlp_out_bias=self.out_bias_.copy(),
                   mlp_out_scale=np.array([self.out_scale_]))
        for i, (weight, bias) in enumerate(self.layers_):
            out[f"mlp_layer{i}_weight"], out[f"mlp_layer{i}_bias"] = weight.copy(), bias.copy()
        return out

    # persistence --------------------------------------------------------------------------
    def get_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        params, arrays = super().get_state()
        for i, (weight, bias) in enumerate(self.layers_):
            arrays[f"layer{i}_weight"], arrays[f"layer{i}_bias"] = np.array(weight), np.array(bias)
        params["n_layers"] = len(self.layers_)
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "ResidualMLPMap":
        est = super().from_state(params, arrays)
        try:
            est.layers_ = [(np.array(arrays[f"layer{i}_weight"], dtype=np.float64, order="C"),
                            np.array(arrays[f"layer{i}_bias"], dtype=np.float64, order="C"))
                           for i in range(int(params["n_layers"]))]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"incomplete ResidualMLPMap state: {exc}") from exc
        d_in = est.n_features_in_
        for weight, bias in est.layers_:
            if weight.shape[1] != d_in or bias.shape != (weight.shape[0],):
                raise InvalidInput("ResidualMLPMap state arrays do not match its dimensions")
            d_in = weight.shape[0]
        if est.out_weight_.shape != (est.n_outputs_, d_in) or est.mean_x_.shape != (est.n_features_in_,):
            raise InvalidInput("ResidualMLPMap state arrays do not match its dimensions")
        return est
