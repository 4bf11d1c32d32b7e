"""Private FLAME's kernels on SecretFlow SPU 0.9.5 (SEMI2K and CHEETAH, two parties), timed in one run.

SPU pins numpy<2 and jax<=0.4.34 and needs Python < 3.12, so it lives in its own virtualenv (ignored by git;
``make spu`` creates it, as below plus ``cryptography`` for Private FLAME's ``correlations: cheetah`` servers):

    python3.11 -m venv .venv-spu
    .venv-spu/bin/pip install "spu==0.9.5" "numpy<2" "jax<=0.4.34" "jaxlib<=0.4.34"
    OMP_NUM_THREADS=1 .venv-spu/bin/python benchmarks/mpc_engines_spu.py [--quick] [--cap 180] [--out DIR]

Kernels (all inputs secret-shared between the two parties, 64-bit ring FM64, SPU's default 18 fraction bits):

- ``gram``    X X^T for X of n x d (the cosine-distance step of FLAME);
- ``wsum``    w^T X for w of n and X of n x d (the weighted mean of the admitted, clipped models);
- ``cmp``     10^4 comparisons x < y (one binary-search step of DBSCAN's radius needs n^2 of them);
- ``rsqrt``   100 reciprocal square roots (normalising n rows; clipping);
- ``median``  the median of 100 values (FLAME's clipping bound S_t).

Two ways to run the two parties, both measured:

- ``sim``: both parties as threads of one process over SPU's in-memory link (``spu.utils.simulation`` does the
  same); CPU seconds are the process's, so both parties together;
- ``tcp``: two party processes over loopback TCP (``spu.libspu.link.create_brpc``), each with its own share,
  as two servers would run; CPU seconds are summed over the two processes.

Every measurement runs in its own child process, killed after ``--cap`` seconds ("did not finish"). Seconds
are for the protocol only (compilation and share generation excluded); bytes are what SPU's link reports as
sent by party 0 (SPU logs "Link details: total send bytes ..." when profiling is on); the error is the largest
absolute difference to float64 numpy on the same inputs. A numpy run of the same kernel in the clear is timed
in the same child, so ratios hold on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK_RE = re.compile(r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+)")
FULL_D = 431_080  # lenet's parameter count


# --------------------------------------------------------------------------------------------- kernels


def kernel(name: str, n: int, d: int, seed: int):
    """(jax function, numpy inputs, float64 reference) of one kernel."""
    import jax.lax as lax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)
    if name == "gram":
        x = (rng.standard_normal((n, d)) * 0.01).astype(np.float32)
        return (lambda a: a @ a.T), [x], lambda a: a.astype(np.float64) @ a.astype(np.float64).T
    if name == "wsum":
        w = rng.random(n).astype(np.float32) / n
        x = (rng.standard_normal((n, d)) * 0.01).astype(np.float32)
        return (lambda v, a: v @ a), [w, x], lambda v, a: v.astype(np.float64) @ a.astype(np.float64)
    if name == "cmp":
        x = rng.standard_normal(n).astype(np.float32)
        y = rng.standard_normal(n).astype(np.float32)
        return (lambda a, b: a < b), [x, y], lambda a, b: a < b
    if name == "rsqrt":
        x = rng.uniform(0.5, 100.0, n).astype(np.float32)
        return (lambda a: lax.rsqrt(a)), [x], lambda a: 1.0 / np.sqrt(a.astype(np.float64))
    if name == "median":
        x = rng.standard_normal(n).astype(np.float32)
        return (lambda a: jnp.median(a)), [x], lambda a: np.median(a.astype(np.float64))
    raise ValueError(f"unknown kernel {name!r}")


def runtime_config(protocol: str, profile: bool):
    import spu.libspu as libspu

    prot = {"SEMI2K": libspu.ProtocolKind.SEMI2K, "CHEETAH": libspu.ProtocolKind.CHEETAH}[protocol]
    cfg = libspu.RuntimeConfig(protocol=prot, field=libspu.FieldType.FM64)
    cfg.enable_hal_profile = profile  # makes SPU log the link's byte counts after each run
    return cfg


def compile_kernel(fn, inputs):
    import spu.libspu as libspu
    import spu.utils.frontend as spu_fe

    names = [f"in{i}" for i in range(len(inputs))]
    exe, _ = spu_fe.compile(spu_fe.Kind.JAX, fn, inputs, {}, names, [libspu.Visibility.VIS_SECRET] * len(inputs),
                            lambda outs: [f"out{i}" for i in range(len(outs))])
    return exe


def error(out, ref) -> float:
    import numpy as np

    out, ref = np.asarray(out), np.asarray(ref)
    if ref.dtype == bool:
        return float(np.mean(out.astype(bool) != ref))  # fraction of wrong comparisons
    return float(np.max(np.abs(out.astype(np.float64) - ref)))


def plaintext_seconds(ref, inputs) -> float:
    t = time.perf_counter()
    ref(*inputs)
    return time.perf_counter() - t


# --------------------------------------------------------------------------------------------- workers


def worker_sim(spec: dict) -> dict:
    """Both parties as threads over the in-memory link; times Runtime.run only."""
    import spu.api as spu_api
    import spu.libspu as libspu

    fn, inputs, ref = kernel(spec["kernel"], spec["n"], spec["d"], spec["seed"])
    cfg = runtime_config(spec["protocol"], profile=True)
    exe = compile_kernel(fn, inputs)
    io = spu_api.Io(2, cfg)
    shares = [io.make_shares(x, libspu.Visibility.VIS_SECRET) for x in inputs]
    desc = libspu.link.Desc()
    for rank in range(2):
        desc.add_party(f"p{rank}", f"thread_{rank}")
    desc.recv_timeout_ms = 600_000  # CHEETAH's HE packing of a large matmul takes minutes on a loaded machine
    start = threading.Barrier(2)
    seconds, outputs, failures = [[], []], [None, None], []

    def party(rank: int) -> None:
        try:
            rank_cfg = libspu.RuntimeConfig(cfg)
            rank_cfg.enable_hal_profile = rank == 0
            rt = spu_api.Runtime(libspu.link.create_mem(desc, rank), rank_cfg)
            for name, share in zip(exe.input_names, shares):
                rt.set_var(name, share[rank])
            start.wait()
            for _ in range(spec["repeat"]):
                c, t = time.process_time(), time.perf_counter()
                rt.run(exe)
                seconds[rank].append(time.perf_counter() - t)
                start.wait()  # both parties done: the process's CPU time covers both
                if rank == 0:
                    cpu.append(time.process_time() - c)
            outputs[rank] = [rt.get_var(name) for name in exe.output_names]
        except BaseException as exc:  # reported by the parent
            failures.append(repr(exc))
            start.abort()

    cpu: list[float] = []
    threads = [threading.Thread(target=party, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError("; ".join(failures))
    out = io.reconstruct([outputs[0][0], outputs[1][0]])
    runs = [max(a, b) for a, b in zip(*seconds)]
    return {"seconds": runs[0], "seconds_again": runs[1:], "cpu_seconds": cpu, "error": error(out, ref(*inputs)),
            "plain_seconds": plaintext_seconds(ref, inputs)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_tcp(spec: dict) -> dict:
    """Two party processes over loopback TCP (brpc); each gets only its own shares (through a file)."""
    import spu.api as spu_api
    import spu.libspu as libspu

    fn, inputs, ref = kernel(spec["kernel"], spec["n"], spec["d"], spec["seed"])
    cfg = runtime_config(spec["protocol"], profile=True)
    exe = compile_kernel(fn, inputs)
    io = spu_api.Io(2, cfg)
    shares = [io.make_shares(x, libspu.Visibility.VIS_SECRET) for x in inputs]
    ports = [free_port(), free_port()]
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        procs = []
        for rank in range(2):
            job = Path(tmp) / f"party{rank}.pkl"
            with job.open("wb") as f:
                pickle.dump({"rank": rank, "ports": ports, "repeat": spec["repeat"], "config": cfg.SerializeToString(),
                             "exe": exe.SerializeToString(),
                             "shares": [(s[rank].meta, list(s[rank].share_chunks)) for s in shares],
                             "out": str(Path(tmp) / f"out{rank}.pkl")}, f)
            procs.append(subprocess.Popen([sys.executable, __file__, "--party", str(job)],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        del shares
        logs = [p.communicate()[0] for p in procs]
        for rank, p in enumerate(procs):
            if p.returncode != 0:
                raise RuntimeError(f"party {rank} exited {p.returncode}: {logs[rank][-2000:]}")
        results = []
        for rank in range(2):
            with open(Path(tmp) / f"out{rank}.pkl", "rb") as f:
                results.append(pickle.load(f))
    out_shares = []
    for r in results:
        s = libspu.Share()
        s.meta, s.share_chunks = r["out"]
        out_shares.append(s)
    out = io.reconstruct(out_shares)
    sent = [LINK_RE.findall(log) for log in logs]
    runs = [max(a, b) for a, b in zip(results[0]["seconds"], results[1]["seconds"])]
    cpu = [a + b for a, b in zip(results[0]["cpu_seconds"], results[1]["cpu_seconds"])]
    return {"seconds": runs[0], "seconds_again": runs[1:], "cpu_seconds": cpu,
            "bytes_sent_party0": [int(x[0]) for x in sent[0]], "bytes_sent_party1": [int(x[0]) for x in sent[1]],
            "error": error(out, ref(*inputs)), "plain_seconds": plaintext_seconds(ref, inputs)}


def party_main(job_path: str) -> None:
    """One SPU party: its link on 127.0.0.1, its shares, Runtime.run timed; writes its output share."""
    import spu.api as spu_api
    import spu.libspu as libspu

    with open(job_path, "rb") as f:
        job = pickle.load(f)
    os.unlink(job_path)
    rank = job["rank"]
    cfg = libspu.RuntimeConfig()
    cfg.ParseFromString(job["config"])
    exe = libspu.Executable()
    exe.ParseFromString(job["exe"])
    desc = libspu.link.Desc()
    for r, port in enumerate(job["ports"]):
        desc.add_party(f"p{r}", f"127.0.0.1:{port}")
    desc.recv_timeout_ms = 600_000
    desc.http_timeout_ms = 600_000
    lctx = libspu.link.create_brpc(desc, rank)
    rt = spu_api.Runtime(lctx, cfg)
    for name, (meta, chunks) in zip(exe.input_names, job["shares"]):
        s = libspu.Share()
        s.meta, s.share_chunks = meta, chunks
        rt.set_var(name, s)
    del job["shares"]
    lctx.barrier()
    seconds, cpu = [], []
    for _ in range(job["repeat"]):
        c, t = time.process_time(), time.perf_counter()
        rt.run(exe)
        seconds.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    out = rt.get_var(exe.output_names[0])
    lctx.barrier()
    with open(job["out"], "wb") as f:
        pickle.dump({"seconds": seconds, "cpu_seconds": cpu, "out": (out.meta, list(out.share_chunks))}, f)
    lctx.stop_link()


# --------------------------------------------------------------------------------------------- driver


def measure(spec: dict, cap: float) -> dict:
    """One measurement in its own process group, killed after ``cap`` seconds."""
    proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and its two party processes
        proc.communicate()
        return {**spec, "status": f"did not finish in {cap:.0f} s"}
    if proc.returncode != 0:
        spu_error = re.findall(r"\[external/[^\]]+\] ([^\\\n]+)", err)  # SPU's "[file.cc:line] message"
        msg = spu_error[0] if spu_error else (err.strip().splitlines() or ["?"])[-1]
        return {**spec, "status": f"failed (exit {proc.returncode}): {msg[-300:]}"}
    result = json.loads(out.strip().splitlines()[-1])
    if spec["mode"] == "sim":  # party 0's link counters, from SPU's profiling log
        sent = LINK_RE.findall(out + err)
        result["bytes_sent_party0"] = [int(x[0]) for x in sent]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {**spec, "status": "ok", **result, "peak_rss_mib_so_far": peak // 1024}


def plan(quick: bool) -> list[dict]:
    grams = [(10, 10_000), (100, 10_000)] if quick else \
        [(10, 10_000), (100, 10_000), (10, 100_000), (100, 100_000), (10, FULL_D), (100, FULL_D)]
    wsums = [(100, 10_000)] if quick else [(100, 10_000), (100, 100_000)]
    kernels = ([("gram", n, d) for n, d in grams] + [("wsum", n, d) for n, d in wsums]
               + [("cmp", 10_000, 1), ("rsqrt", 100, 1), ("median", 100, 1)])
    # small kernels run twice in one session: the second run shows the cost without CHEETAH's one-off OT set-up
    return [{"protocol": protocol, "mode": mode, "kernel": k, "n": n, "d": d, "seed": 0,
             "repeat": 1 if k in ("gram", "wsum") else 2}
            for mode in ("sim", "tcp") for protocol in ("SEMI2K", "CHEETAH") for k, n, d in kernels]


def fmt_bytes(runs: list[int]) -> str:
    return " / ".join(fmt_one(b) for b in runs) or "-"


def fmt_one(b: int) -> str:
    return f"{b / 2**20:,.1f} MiB" if b >= 2**20 else f"{b / 2**10:,.1f} KiB"


def table(rows: list[dict]) -> str:
    lines = ["| protocol | mode | kernel | n | d | seconds | again | CPU s (per run) | x plaintext "
             "| sent by P0 (per run) | max error |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        kernel = f"{r['kernel']} ({r['note']})" if r.get("note") else r["kernel"]  # e.g. a longer cap
        head = f"| {r['protocol']} | {r['mode']} | {kernel} | {r['n']} | {r['d']} |"
        if r["status"] != "ok":
            lines.append(f"{head} {r['status']} | | | | | |")
            continue
        ratio = r["seconds"] / max(r["plain_seconds"], 1e-9)
        again = ", ".join(f"{x:.2f}" for x in r["seconds_again"]) or "-"
        cpu = " / ".join(f"{c:.2f}" for c in r["cpu_seconds"])
        lines.append(f"{head} {r['seconds']:.2f} | {again} | {cpu} | {ratio:,.0f} | "
                     f"{fmt_bytes(r.get('bytes_sent_party0'))} | {r['error']:.2g} |")
    return "\n".join(lines)


def find(rows: list[dict], protocol: str, mode: str, kernel: str, n: int, d: int) -> dict | None:
    return next((r for r in rows if r["status"] == "ok" and (r["protocol"], r["mode"], r["kernel"], r["n"], r["d"])
                 == (protocol, mode, kernel, n, d)), None)


def scaled(rows: list[dict], protocol: str, mode: str, kernel: str, n: int, d: int, key: str):
    """(value, how) of one kernel at (n, d): measured; else, at the same n, the line a + b d through the two
    largest measured d (every cost of X X^T and w^T X is a fixed part plus a part linear in d at fixed n), or
    the one measured d scaled linearly when there is only one."""
    r = find(rows, protocol, mode, kernel, n, d)
    if r is not None:
        return value(r, key), "measured"
    done = sorted((r for r in rows if r["status"] == "ok" and (r["protocol"], r["mode"], r["kernel"], r["n"])
                   == (protocol, mode, kernel, n) and r["d"] < d), key=lambda r: r["d"])
    if not done:
        return None, "not measured"
    if len(done) == 1:
        r = done[0]
        return value(r, key) * d / r["d"], f"d={r['d']:,} x {d / r['d']:.1f}"
    (d0, v0), (d1, v1) = ((r["d"], value(r, key)) for r in done[-2:])
    slope = (v1 - v0) / (d1 - d0)
    return v1 + slope * (d - d1), f"line through d={d0:,}, {d1:,}"


def value(r: dict, key: str) -> float:
    """Protocol seconds of the warm run (second run when there is one), CPU seconds, or party 0's bytes."""
    if key == "seconds":
        return (r["seconds_again"] or [r["seconds"]])[-1]
    if key == "cpu_seconds":
        return r["cpu_seconds"][-1]
    return float(r["bytes_sent_party0"][-1])


ROUND_STEPS = 20  # binary-search steps for DBSCAN's radius


def round_estimate(rows: list[dict], n: int = 100, d: int = FULL_D) -> str:
    """One Private FLAME round from the kernels: Gram of n x d, 20 x n^2 comparisons, 2 x n rsqrt, one median
    of n, one weighted sum w^T X of n x d (clipping and mean together)."""
    out = [f"One round at n = {n}, d = {d:,} (Gram + {ROUND_STEPS} x {n * n:,} comparisons + 2 x {n} rsqrt + "
           f"median of {n} + weighted sum of {n} x {d:,}), from warm kernels:", "",
           "| protocol | mode | Gram s | comparisons s | rsqrt+median s | weighted sum s | round s | "
           "round CPU s (both parties) | party 0 sends | one-off set-up s | Gram, sum scaled from |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for protocol in ("SEMI2K", "CHEETAH"):
        for mode in ("sim", "tcp"):
            parts = {}
            for key in ("seconds", "cpu_seconds", "bytes"):
                g, how_g = scaled(rows, protocol, mode, "gram", n, d, key)
                w, how_w = scaled(rows, protocol, mode, "wsum", n, d, key)
                c, r, m = (find(rows, protocol, mode, k, size, 1) for k, size in
                           (("cmp", n * n), ("rsqrt", n), ("median", n)))
                if None in (g, w, c, r, m):
                    parts = None
                    break
                parts[key] = (g, ROUND_STEPS * value(c, key), 2 * value(r, key) + value(m, key), w)
                parts["how"] = f"{how_g}; {how_w}"
                first = c["seconds"] - value(c, "seconds")
            if parts is None:
                out.append(f"| {protocol} | {mode} | incomplete kernels | | | | | | | | |")
                continue
            sec, cpu, byt = parts["seconds"], parts["cpu_seconds"], parts["bytes"]
            out.append(f"| {protocol} | {mode} | {sec[0]:,.0f} | {sec[1]:,.1f} | {sec[2]:,.2f} | {sec[3]:,.0f} | "
                       f"{sum(sec):,.0f} | {sum(cpu):,.0f} | {sum(byt) / 2**30:,.2f} GiB | {max(first, 0):,.1f} | "
                       f"{parts['how']} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    ap.add_argument("--cap", type=float, default=180.0, help="seconds before a measurement is killed")
    ap.add_argument("--only", default="", help="comma-separated filters protocol/mode/kernel, e.g. CHEETAH,tcp")
    ap.add_argument("--max-d", type=int, default=FULL_D)
    ap.add_argument("--out", default=str(ROOT / "runs" / "mpc_engines_spu"))
    ap.add_argument("--report", metavar="RESULTS_JSON",
                    help="only print the table and round estimate of a results file")
    ap.add_argument("--retry", metavar="RESULTS_JSON", help="measure again the rows of a results file that failed")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--party", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.report:
        rows = json.loads(Path(args.report).read_text())
        print(f"{table(rows)}\n\n{round_estimate(rows)}")
        return
    if args.party:
        party_main(args.party)
        return
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps((worker_sim if spec["mode"] == "sim" else worker_tcp)(spec)))
        return
    filters = [f for f in args.only.split(",") if f]
    specs = [s for s in plan(args.quick) if s["d"] <= args.max_d
             and all(f in (s["protocol"], s["mode"], s["kernel"]) for f in filters)]
    kept: list[dict] = []
    if args.retry:
        kept = json.loads(Path(args.retry).read_text())
        specs = [{k: r[k] for k in ("protocol", "mode", "kernel", "n", "d", "seed", "repeat")} for r in kept
                 if r["status"].startswith(("failed", "skipped"))]
        kept = [r for r in kept if not r["status"].startswith(("failed", "skipped"))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    # a bigger kernel of the same kind is skipped once a smaller one timed out or failed
    unfinished = [r for r in kept if r["status"].startswith("did not finish")]
    for spec in specs:
        same = [u for u in unfinished if all(u[k] == spec[k] for k in ("protocol", "mode", "kernel"))
                and u["n"] <= spec["n"] and u["d"] <= spec["d"]]
        if same:
            row = {**spec, "status": f"skipped (n={same[0]['n']}, d={same[0]['d']}: {same[0]['status']})"[:80]}
        else:
            row = measure(spec, args.cap)
            if row["status"] != "ok":
                unfinished.append(row)
        rows.append(row)
        print(json.dumps(row), flush=True)
        (out / "results.json").write_text(json.dumps(kept + rows, indent=1))
    rows = kept + rows
    import numpy
    import spu

    md = (f"spu {spu.__version__}, numpy {numpy.__version__}, Python {sys.version.split()[0]}, "
          f"os.cpu_count() = {os.cpu_count()}, load average at the end: {os.getloadavg()}\n\n"
          f"{table(rows)}\n\n{round_estimate(rows)}\n")
    (out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
