"""Seconds of the server step of every registered defense for n clients and d = 431,080 (lenet), in one run.

Each defense is built with its default parameters (plus what its context needs: lenet's layout and model,
a clean server set of 100 Fashion-MNIST-sized images), and aggregates the same random round: the global
model is lenet's initial model, and the updates have realistic scale (norm about 2: a shared benign
direction plus per-client noise; the first 20 % are attackers with a direction of their own). For every n
the defenses run one after another and the whole pass is repeated ``--repeat`` times (median reported), so
the ratios between defenses are measured under the same machine load. A combination is skipped, with the
reason printed, when a defense rejects that n with its default parameters, or when its measured time at
the previous n, extrapolated by its growth so far (at least linear), exceeds ``--budget`` seconds.

Growth: the exponents of n (between the two largest n measured) and of d (at the middle n, d/4 against d)
from ``t ∝ n^a d^b``.

FLAME's cosine distances, before and after (float64 matmul of the models against a float32 symmetric Gram of
the updates with the model terms in float64), are timed side by side at each n up to ``--reference-max-n``
(the float64 reference holds about 8 n·d bytes more: 3.4 GB at n = 1000).

    python benchmarks/defense_cost.py [--quick] [--n 10 100 1000] [--repeat 3] [--budget 120]
"""

from __future__ import annotations

import argparse
import math
import signal
import statistics
import time
from typing import Callable

import torch

from fedshield.defenses import DefenseContext, RoundInput
from fedshield.core.numeric import cosine_distances
from fedshield.defenses.registry import available_defenses, build_defense
from fedshield.models import ParamLayout, build_model, flatten_params
from fedshield.sim.train import local_train_function


def make_round(n: int, g: torch.Tensor, layout: ParamLayout, seed: int = 0) -> RoundInput:
    d = g.numel()
    gen = torch.Generator().manual_seed(seed)
    u = 0.0015 * torch.randn(n, d, generator=gen)
    u += 0.002 * torch.randn(d, generator=gen)
    u[: max(1, n // 5)] += 0.003 * torch.randn(d, generator=gen)
    return RoundInput(
        global_params=g, updates=u, layout=layout, round=1, client_ids=list(range(n)),
        num_samples=torch.full((n,), 600.0), generator=torch.Generator().manual_seed(seed + 1),
    )


def shrink(inp: RoundInput, layout: ParamLayout, keep: int) -> RoundInput:
    """The same round on the first ``keep`` coordinates of every tensor, as a single weight (for d-growth)."""
    from fedshield.models import LayoutEntry

    small = ParamLayout((LayoutEntry("w", (keep,), 0, keep, "weight"),))
    return RoundInput(inp.global_params[:keep].clone(), inp.updates[:, :keep].contiguous(), small, inp.round,
                      inp.client_ids, inp.num_samples, torch.Generator().manual_seed(1))


class _TooSlow(Exception):
    pass


def limited(fn: Callable[[], object], seconds: float) -> None:
    """Run ``fn``; raise _TooSlow if it takes longer than ``seconds`` (SIGALRM; main thread only)."""

    def handler(signum, frame):  # noqa: ARG001
        raise _TooSlow

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--budget", type=float, default=120.0, help="skip a combination predicted to take longer (s)")
    ap.add_argument("--reference-max-n", type=int, default=100)
    ap.add_argument("--defenses", nargs="*", help="only these (default: all registered)")
    ap.add_argument("--quick", action="store_true", help="n = 10, 100; one repetition; budget 30 s; no d-growth")
    args = ap.parse_args()
    if args.quick:
        args.n, args.repeat, args.budget = [10, 100], 1, 30.0
    torch.manual_seed(0)
    model_fn = lambda: build_model("lenet", 1, 10, 28)  # noqa: E731
    init = model_fn()
    layout = ParamLayout.from_module(init)
    g = flatten_params(init)
    gen = torch.Generator().manual_seed(2)
    server = (torch.rand(100, 1, 28, 28, generator=gen), torch.arange(100) % 10)
    ctx = DefenseContext(layout=layout, model_fn=model_fn, server_data=server, num_classes=10,
                         local_train=local_train_function(model_fn, "cpu"), extra={"input_shape": (1, 28, 28)})
    names = args.defenses or list(available_defenses())
    print(f"d = {g.numel()}, torch threads = {torch.get_num_threads()}, repeat = {args.repeat}", flush=True)

    times: dict[str, dict[int, float]] = {k: {} for k in names}
    skipped: dict[str, dict[int, str]] = {k: {} for k in names}
    prev_n: dict[str, int] = {}
    for n in args.n:
        inp = make_round(n, g, layout)
        runs: dict[str, list[float]] = {k: [] for k in names}
        active = []
        for k in names:
            if k in prev_n and k in times and prev_n[k] in times[k]:
                t_prev = times[k][prev_n[k]]
                ns = sorted(times[k])
                a = max(1.0, math.log(times[k][ns[-1]] / times[k][ns[-2]]) / math.log(ns[-1] / ns[-2])) if len(ns) > 1 else 1.0
                est = t_prev * (n / prev_n[k]) ** a
                if est > args.budget:
                    skipped[k][n] = f"predicted {est:.0f} s (n^{a:.1f} from {t_prev:.2f} s at n = {prev_n[k]})"
                    continue
            elif k in prev_n or any(skipped[k].values()):
                skipped[k][n] = "skipped at a smaller n"
                continue
            active.append(k)
        defenses = {}
        for k in active:
            try:
                defenses[k] = build_defense(k, {}, ctx)
                t0 = time.perf_counter()
                # warm-up (and the check that this n is allowed), stopped past the budget
                limited(lambda: defenses[k].aggregate(inp), args.budget)
                if args.repeat == 1:  # the warm-up is the measurement
                    runs[k].append(time.perf_counter() - t0)
            except _TooSlow:
                skipped[k][n] = f"stopped after {args.budget:.0f} s (the budget)"
                defenses.pop(k, None)
            except (ValueError, RuntimeError) as exc:
                skipped[k][n] = f"{type(exc).__name__}: {str(exc)[:90]}"
                defenses.pop(k, None)
        for _ in range(args.repeat if args.repeat > 1 else 0):
            for k, dfn in defenses.items():
                fresh = build_defense(k, {}, ctx)  # defenses with history start from the same state
                runs[k].append(timed(lambda: fresh.aggregate(inp)))
        for k in defenses:
            times[k][n] = statistics.median(runs[k])
            prev_n[k] = n
        line = ", ".join(f"{k} {times[k][n]:.3f}" for k in defenses)
        print(f"n = {n}: {line}", flush=True)
        if n <= args.reference_max_n:
            ref, new = [], []
            for _ in range(args.repeat):
                ref.append(timed(lambda: cosine_distances(g + inp.updates)))
                new.append(timed(lambda: cosine_distances(inp.updates, g, gram_dtype=torch.float32)))
            r, s = statistics.median(ref), statistics.median(new)
            err = float(((cosine_distances(inp.updates, g, gram_dtype=torch.float32) - cosine_distances(g + inp.updates)).abs()).max())
            print(f"  FLAME distances at n = {n}: float64 reference {r:.3f} s, float32 Gram + float64 terms {s:.3f} s "
                  f"({r / s:.2f}x), max |difference| {err:.1e}", flush=True)
        del inp

    dgrow: dict[str, str] = {}
    if not args.quick and len(args.n) >= 2:
        n_mid = sorted(args.n)[len(args.n) // 2 - (1 if len(args.n) % 2 == 0 else 0)]
        full = make_round(n_mid, g, layout)
        quarter = shrink(full, layout, g.numel() // 4)
        for k in names:
            if n_mid not in times[k] or k in ("fltrust", "deepsight", "fedcc", "crfl"):
                dgrow[k] = "–"  # these need lenet's layout (a model evaluation or per-layer terms)
                continue
            try:
                tq = statistics.median(timed(lambda: build_defense(k, {}, DefenseContext(layout=quarter.layout)).aggregate(quarter))
                                       for _ in range(args.repeat))
                dgrow[k] = f"{math.log(times[k][n_mid] / tq) / math.log(4):.2f}"
            except (ValueError, RuntimeError) as exc:
                dgrow[k] = f"– ({type(exc).__name__})"
        print(f"(d-growth measured at n = {n_mid})")

    ns = args.n
    print()
    print("| defense | " + " | ".join(f"n = {n} (s)" for n in ns) + " | growth in n | growth in d |")
    print("|---|" + "---|" * (len(ns) + 2))
    for k in names:
        cells = [f"{times[k][n]:.3f}" if n in times[k] else "skipped" for n in ns]
        measured = sorted(times[k])
        an = (f"n^{math.log(times[k][measured[-1]] / times[k][measured[-2]]) / math.log(measured[-1] / measured[-2]):.2f}"
              if len(measured) >= 2 else "–")
        print(f"| {k} | " + " | ".join(cells) + f" | {an} | {('d^' + dgrow[k]) if dgrow.get(k, '–')[0] != '–' else dgrow.get(k, '–')} |")
    notes = [(k, n, why) for k in names for n, why in skipped[k].items()]
    if notes:
        print()
        for k, n, why in notes:
            print(f"- {k}, n = {n}: skipped: {why}")


if __name__ == "__main__":
    main()
