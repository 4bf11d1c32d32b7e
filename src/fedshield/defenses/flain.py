"""FLAIN (Ding, Yang, Huang, "FLAIN: Mitigating Backdoor Attacks in Federated Learning via Flipping Weight Updates
of Low-Activation Input Neurons", arXiv 2408.08655; ICMR 2025): a post-training repair, not an aggregator.

Algorithm (docs/defenses.md, FLAIN.2 and FLAIN.3; the paper's full text could not be read, so the steps follow the
abstract and the authors' code ``FLAIN/src/defense_*.py``):

1. U = W_T.fc − W_0.fc, the cumulative update of the analysed layer's weight (bias untouched), and
   N0 = ‖W_T.fc‖_F;
2. a_j = mean over the auxiliary set of the layer's j-th input (eval mode, final model); acc0 = Acc(W_T, aux);
3. for k = k0, k0 + Δk, … ≤ k_max: L = {j : a_j ≤ k}; W.fc[:, j] = W_0.fc[:, j] − U[:, j] for j ∈ L ("flip"),
   W_T.fc[:, j] otherwise; acc = Acc(W, aux); stop at the first k with acc0 − acc > max_acc_drop
   (the abstract: "until the performance degradation on the auxiliary data becomes unacceptable");
4. rescale the layer's weight to N0 at the stopping point.

W_0 is the stored initial global model of the FL run, passed in as given (the authors' code re-creates it from
a fixed seed).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..core.numeric import is_bool, is_finite_number, is_int, is_number
from ..models import ParamLayout, load_flat_params
from .base import require
from .registry import POST_TRAINING

__all__ = ["FLAIN", "FlainResult", "aux_split", "find_layer"]


@dataclass(frozen=True)
class FlainResult:
    """Outcome of :meth:`FLAIN.repair`.

    ``params``: the repaired flat parameters (d,). ``k``: the activation threshold whose flip was returned (the
    violating k by default; the last acceptable k with ``return_last_acceptable``; 0.0 when W_T is returned
    unchanged). ``flipped``: how many input neurons were flipped. ``steps``: how many distinct candidate sets were
    evaluated on the auxiliary set. ``stopped_reason``: why the search ended.
    """

    params: Tensor
    k: float
    flipped: int
    aux_acc_before: float
    aux_acc_after: float
    steps: int
    stopped_reason: str


def find_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    """(name, module) of the analysed layer: ``layer`` by name, or the first ``nn.Linear`` in module order."""
    if layer is None:
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Linear):
                return name, mod
        raise ValueError("FLAIN: the model has no nn.Linear layer; pass layer=<module name>")
    mods = dict(model.named_modules())
    if layer not in mods:
        raise ValueError(f"FLAIN: no module named {layer!r}; modules: {[n for n in mods if n]}")
    mod = mods[layer]
    w = getattr(mod, "weight", None)
    if not isinstance(w, Tensor) or w.dim() != 2:
        raise ValueError(f"FLAIN: module {layer!r} has no 2-D weight (input neurons are its columns)")
    return layer, mod


def aux_split(train_y: Tensor, per_class: int, seed: int, exclude: Tensor | None = None) -> Tensor:
    """Indices of ``per_class`` random samples of every class, drawn from a TRAINING split's labels ``train_y``.

    The authors' code takes the auxiliary set from the test split; here it must come from the training split (the
    caller passes its labels) so that the test set stays untouched. ``exclude`` holds indices that may not be used
    (e.g. those dealt to clients). Returns sorted int64 indices; raises ``ValueError`` when a class has too few
    samples left.
    """
    require(is_int(per_class) and per_class >= 1, "per_class",
            per_class, "allowed: an integer >= 1")
    y = torch.as_tensor(train_y).reshape(-1).cpu()
    available = torch.ones(y.numel(), dtype=torch.bool)
    if exclude is not None:
        ex = torch.as_tensor(exclude, dtype=torch.long).reshape(-1).cpu()
        if ex.numel() and (int(ex.min()) < 0 or int(ex.max()) >= y.numel()):
            raise ValueError("aux_split: exclude holds indices outside the training split")
        available[ex] = False
    gen = torch.Generator().manual_seed(int(seed))
    picks = []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero((y == c) & available).flatten()
        if idx.numel() < per_class:
            raise ValueError(f"aux_split: class {c} has only {idx.numel()} available samples, need {per_class}")
        picks.append(idx[torch.randperm(idx.numel(), generator=gen)[:per_class]])
    return torch.sort(torch.cat(picks)).values


@POST_TRAINING.register
class FLAIN:
    """FLAIN post-training repair (docs/defenses.md, FLAIN.3).

    Parameters
    ----------
    k0, k_step, k_max:
        the activation threshold schedule k = k0, k0 + k_step, … ≤ k_max (defaults 1e-3, 1e-4, 1.0).
    max_acc_drop:
        stop at the first k with acc0 − acc > max_acc_drop (strictly more), accuracies as fractions in [0, 1].
    return_last_acceptable:
        False (default, the authors' code): return the flip at the violating k. True: return the flip of the
        previous k (or W_T unchanged if the first k already violates).
    layer:
        module name of the analysed layer; None (default) means the first ``nn.Linear`` in module order (fc1).
    rescale:
        rescale the layer's weight to its original Frobenius norm ‖W_T.fc‖_F at the stopping point (default True).
    """

    name: ClassVar[str] = "flain"
    summary: ClassVar[str] = ("post-training repair: flip the cumulative update of the low-activation input neurons "
                             "of the first dense layer while the auxiliary accuracy drop stays acceptable")
    paper: ClassVar[str] = "Ding et al., FLAIN, arXiv 2408.08655 (ICMR 2025)"

    def __init__(
        self,
        k0: float = 1e-3,
        k_step: float = 1e-4,
        k_max: float = 1.0,
        max_acc_drop: float = 0.01,
        return_last_acceptable: bool = False,
        layer: str | None = None,
        rescale: bool = True,
    ):
        require(is_finite_number(k0) and k0 >= 0, "k0", k0, "allowed: a finite number >= 0")
        require(is_finite_number(k_step) and k_step > 0, "k_step", k_step,
                "allowed: a finite number > 0")
        require(is_finite_number(k_max) and k_max >= (k0 if is_number(k0) else 0), "k_max", k_max,
                "allowed: a finite number >= k0")
        require(is_number(max_acc_drop) and 0 <= max_acc_drop <= 1, "max_acc_drop", max_acc_drop,
                "allowed: a number in [0, 1] (accuracy as a fraction)")
        require(is_bool(return_last_acceptable), "return_last_acceptable", return_last_acceptable,
                "allowed: True, False")
        require(layer is None or (isinstance(layer, str) and layer != ""), "layer", layer,
                "allowed: None (first nn.Linear) or a module name")
        require(is_bool(rescale), "rescale", rescale, "allowed: True, False")
        self.k0 = float(k0)
        self.k_step = float(k_step)
        self.k_max = float(k_max)
        self.max_acc_drop = float(max_acc_drop)
        self.return_last_acceptable = return_last_acceptable
        self.layer = layer
        self.rescale = rescale

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"FLAIN({params})"

    def _grid(self, i: int) -> float:
        return self.k0 + i * self.k_step

    def _first_index_at_least(self, a: float) -> int:
        """Smallest grid index i with k0 + i·k_step ≥ a (exact in the float expression used for k)."""
        i = max(0, math.ceil((a - self.k0) / self.k_step))
        while i > 0 and self._grid(i - 1) >= a:
            i -= 1
        while self._grid(i) < a:
            i += 1
        return i

    @torch.no_grad()
    def repair(
        self,
        model: nn.Module,
        initial_params: Tensor,
        final_params: Tensor,
        aux_x: Tensor,
        aux_y: Tensor,
        batch_size: int = 1000,
    ) -> FlainResult:
        """Flip the low-activation input columns of the layer's weight update (docs/defenses.md, FLAIN.2).

        ``model`` gives the architecture only (it is copied, never modified); ``initial_params`` is W_0 as stored
        at the start of the FL run, ``final_params`` is W_T, both flat in ``ParamLayout.from_module(model)``
        order. Only the layer's weight changes in the result; its bias and every other tensor are W_T's.
        """
        require(is_int(batch_size) and batch_size >= 1,
                "batch_size", batch_size, "allowed: an integer >= 1")
        net = copy.deepcopy(model)
        net.eval()
        layout = ParamLayout.from_module(net)
        w0 = torch.as_tensor(initial_params).detach()
        wt = torch.as_tensor(final_params).detach()
        for nm, t in (("initial_params", w0), ("final_params", wt)):
            if t.shape != (layout.dim,):
                raise ValueError(f"FLAIN: {nm} has shape {tuple(t.shape)}, the model needs ({layout.dim},)")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"FLAIN: {nm} contains non-finite values")
        if aux_x.shape[0] == 0 or aux_x.shape[0] != aux_y.shape[0]:
            raise ValueError(f"FLAIN: aux_x has {aux_x.shape[0]} samples and aux_y {aux_y.shape[0]}; "
                             "need the same non-zero number")

        layer_name, layer_mod = find_layer(net, self.layer)
        wname = f"{layer_name}.weight" if layer_name else "weight"
        entry = layout[wname]
        load_flat_params(net, wt.to(torch.float32), layout)
        device = next(iter(net.parameters())).device
        x_all = aux_x.to(device)
        y_all = aux_y.to(device)

        w_t = layout.view(wt, wname).to(device=device, dtype=torch.float64)
        w_0 = layout.view(w0, wname).to(device=device, dtype=torch.float64)
        flipped_w = 2.0 * w_0 - w_t  # W_0 − U with U = W_T − W_0
        n0 = torch.linalg.matrix_norm(w_t)  # Frobenius norm of W_T.fc

        # Step 2: mean input activation per input neuron (forward pre-hook), and acc0, in one pass.
        sums: list[Tensor] = []
        count = [0]

        def hook(_mod, args):
            inp = args[0].detach()
            flat = inp.reshape(-1, inp.shape[-1]).to(torch.float64)
            sums.append(flat.sum(dim=0))
            count[0] += flat.shape[0]

        accuracy = _make_evaluator(net, layer_name, x_all, y_all, batch_size)
        handle = layer_mod.register_forward_pre_hook(hook)
        try:
            acc0 = accuracy()
        finally:
            handle.remove()
        act = torch.stack(sums).sum(dim=0) / count[0]
        if act.numel() != w_t.shape[1]:
            raise ValueError(f"FLAIN: layer {layer_name!r} sees {act.numel()} inputs but its weight has "
                             f"{w_t.shape[1]} columns")

        param = dict(net.named_parameters())[wname]

        def set_weight(mask: Tensor | None, do_rescale: bool) -> Tensor:
            w = w_t.clone() if mask is None else torch.where(mask.unsqueeze(0), flipped_w, w_t)
            if do_rescale:
                norm = torch.linalg.matrix_norm(w)
                if float(norm) > 0:
                    w = w * (n0 / norm)
            param.copy_(w.to(param.dtype))
            return w

        # Step 3: k schedule, evaluating only the k values whose candidate set L differs from the previous one.
        act_cpu = act.cpu()
        sorted_act = torch.sort(act_cpu).values.tolist()
        i_max = math.floor((self.k_max - self.k0) / self.k_step + 1e-9)
        while i_max > 0 and self._grid(i_max) > self.k_max:
            i_max -= 1
        while self._grid(i_max + 1) <= self.k_max:
            i_max += 1

        steps = 0
        prev_mask: Tensor | None = None  # the last evaluated, acceptable set; None = nothing flipped
        result_mask: Tensor | None = None
        result_k = 0.0
        i = 0
        while True:
            k = self._grid(i)
            mask = act_cpu <= k
            cnt = int(mask.sum())
            if cnt > 0:
                set_weight(mask.to(device), do_rescale=False)
                acc = accuracy()
                steps += 1
            else:
                acc = acc0  # nothing flipped: the model is W_T
            if acc0 - acc > self.max_acc_drop:
                why = f"aux accuracy dropped by {acc0 - acc:.4f} > max_acc_drop={self.max_acc_drop} at k={k:.6g}"
                if not self.return_last_acceptable:
                    result_mask, result_k = mask, k
                    reason = why + "; returned that k's flip"
                elif i == 0:
                    result_mask, result_k = None, 0.0
                    reason = why + "; the first k already violated, W_T returned unchanged"
                else:
                    # L at the previous grid k equals the last evaluated set (k values in between were skipped
                    # because they do not change L)
                    result_mask, result_k = prev_mask, self._grid(i - 1)
                    reason = why + "; returned the last acceptable k's flip"
                break
            prev_mask = mask if cnt > 0 else None
            # jump to the next grid k at which L changes: the first grid point >= the smallest a_j > k
            j = i_max + 1 if cnt == len(sorted_act) else self._first_index_at_least(sorted_act[cnt])
            if j > i_max:
                result_mask, result_k = prev_mask, self._grid(i_max)
                reason = (f"k_max={self.k_max} reached without the aux accuracy dropping by more than "
                          f"max_acc_drop={self.max_acc_drop}; returned the flip at the last k")
                break
            i = j

        # Step 4: build the result (rescaled at the stopping point), measure its aux accuracy.
        if result_mask is None or int(result_mask.sum()) == 0:
            final_w = set_weight(None, do_rescale=False)
            flipped = 0
        else:
            final_w = set_weight(result_mask.to(device), do_rescale=self.rescale)
            flipped = int(result_mask.sum())
        acc_after = accuracy()

        out = wt.clone()
        out[entry.slice] = final_w.reshape(-1).to(device=out.device, dtype=out.dtype)
        return FlainResult(
            params=out,
            k=float(result_k),
            flipped=flipped,
            aux_acc_before=float(acc0),
            aux_acc_after=float(acc_after),
            steps=steps,
            stopped_reason=reason,
        )


def _full_accuracy(net: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for s in range(0, x.shape[0], batch_size):
        logits = net(x[s:s + batch_size])
        correct += (logits.argmax(dim=1) == y[s:s + batch_size]).sum()
    return float(correct) / x.shape[0]


def _split_at_layer(net: nn.Module, layer_name: str):
    """(prefix, suffix) GraphModules around the call of ``layer_name``, or None when the model cannot be split.

    ``prefix(x)`` returns every value computed before the layer that the layer or anything after it uses;
    ``suffix(*those)`` finishes the forward pass. The suffix shares the model's modules, so changing the layer's
    weight in place changes the suffix's output while the cached prefix values stay valid (the layer's weight
    cannot influence what is computed before it).
    """
    import torch.fx as fx

    gm = fx.symbolic_trace(net)  # traced in eval mode, so functional dropout/BN flags are the eval ones
    nodes = list(gm.graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    targets = [n for n in nodes if n.op == "call_module" and n.target == layer_name]
    if len(targets) != 1 or sum(n.op == "placeholder" for n in nodes) != 1:
        return None
    if any(n.op == "get_attr" and str(n.target).startswith(f"{layer_name}.") for n in nodes):
        return None
    t = pos[targets[0]]
    boundary = [n for n in nodes[:t] if any(pos[u] >= t for u in n.users)]
    pg = fx.Graph()
    env: dict = {}
    for n in nodes[:t]:
        env[n] = pg.node_copy(n, lambda a: env[a])
    pg.output(tuple(env[b] for b in boundary))
    sg = fx.Graph()
    env2: dict = {}
    for b in boundary:
        env2[b] = sg.placeholder(f"cached_{b.name}")
    for n in nodes[t:]:
        env2[n] = sg.node_copy(n, lambda a: env2[a])
    return fx.GraphModule(gm, pg), fx.GraphModule(gm, sg)


def _make_evaluator(net: nn.Module, layer_name: str, x: Tensor, y: Tensor, batch_size: int):
    """A no-argument callable returning the aux accuracy of ``net`` in its current state.

    Where ``torch.fx`` can split the model at the analysed layer, everything before the layer is computed once
    and cached, and each call only re-runs the layer and what follows (checked against the plain forward pass on
    the first batch; otherwise, and on any tracing failure, every call runs the full model).
    """
    full = lambda: _full_accuracy(net, x, y, batch_size)  # noqa: E731
    try:
        split = _split_at_layer(net, layer_name)
        if split is None:
            return full
        prefix, suffix = split
        cache = []
        for s in range(0, x.shape[0], batch_size):
            vals = prefix(x[s:s + batch_size])
            cache.append(tuple(vals))
        ref = net(x[:batch_size])
        out = suffix(*cache[0])
        if not isinstance(out, Tensor) or out.shape != ref.shape or not torch.allclose(out, ref, rtol=1e-5, atol=1e-6):
            return full
    except Exception:  # noqa: BLE001 - any tracing problem: fall back to the plain forward pass
        return full

    def cached() -> float:
        correct = torch.zeros((), dtype=torch.long, device=x.device)
        for b, s in enumerate(range(0, x.shape[0], batch_size)):
            logits = suffix(*cache[b])
            correct += (logits.argmax(dim=1) == y[s:s + batch_size]).sum()
        return float(correct) / x.shape[0]

    return cached
