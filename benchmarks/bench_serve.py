"""``manyicl serve`` under load, side by side with answering one by one and with re-running the prompt.

For each task (CLINC150, 150-way, and SST-2, 2-way, at 64 shots; a synthetic 150-way task when the shared
data is absent) the same single-input predict requests are sent over loopback from 1, 8 and 32 concurrent
clients to

  batched      a server that scores concurrent requests of a task in one pass over the shared prompt cache
  one_by_one   the same server with batching off (``--max-batch-inputs 1 --batch-wait-ms 0``)

and timed client-side (requests/s, p50, p99). The batched server is also asked with ``top_k`` (default 1):
the same label from a pruned best-first search of the option trie instead of scoring all 150 options
(``batched_top_k``). Two more comparisons:

  per_request_prompt  the prompt processed again for every request (what a server without a prompt cache,
                      or lm-evaluation-harness, does; here with all options in one trie pass, so a lower
                      bound on lm-eval's cost), in process, on a few requests
  cold_start          the one_by_one server starts on the batched server's state folder: its first
                      request loads the cache from disk, against the prefill the batched server ran

Every request goes to 127.0.0.1; every loop is bounded in count and time. Results: a table on stdout and
``benchmarks/results/serve.json`` (``serve_tiny.json`` with ``--tiny``).

    python benchmarks/bench_serve.py                  # SmolLM2-135M, real data (long on 2 busy cores)
    python benchmarks/bench_serve.py --tiny           # tiny random model, synthetic task: proves it runs
    python benchmarks/bench_serve.py --tasks clinc150 --concurrency 1 --requests 4 --no-one-by-one
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from manyicl.fileio import atomic_write_json
from manyicl.serve.metrics import parse_metrics
from manyicl.tasks import Task, write_task_dir

sys.path.insert(0, str(Path(__file__).parent))
from stand_in_tasks import synthetic_150way  # noqa: E402

OUT = Path(__file__).parent / "results"
HOST = "127.0.0.1"  # loopback only


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


def load_tasks(names: list[str], tiny: bool) -> list[Task]:
    if tiny:
        return [synthetic_150way()]
    from manyicl.realdata import default_data_dir, load_shared_tasks

    d = default_data_dir()
    if d is None or not d.is_dir():
        print("shared data not found: a synthetic 150-way task stands in for CLINC150", file=sys.stderr)
        return [synthetic_150way()]
    return load_shared_tasks(d, names)


# --------------------------------------------------------------------------------------------
# A server process
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ServerProc:
    def __init__(self, model: str, state: Path, roots: Path, log: Path, extra: list[str]):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        cmd = [sys.executable, "-m", "manyicl", "-q", "serve", "--model", model, "--host", HOST]
        cmd += ["--port", str(self.port), "--state-dir", str(state), "--allow-root", str(roots), *extra]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        env.pop("MANYICL_API_KEY", None)
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))
        self.log = log

    def wait_ready(self, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()[-2000:]}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return time.perf_counter() - self.t0
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not come up in time")

    def metrics(self) -> dict[str, float]:
        return parse_metrics(requests.get(self.url + "/metrics", timeout=30).text)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


def load(
    url: str, task: str, inputs: list[str], clients: int, n: int, budget_s: float, top_k: int | None = None
) -> dict:
    """``n`` single-input requests from ``clients`` threads (stopping early after ``budget_s``)."""
    extra = {} if top_k is None else {"top_k": top_k}
    lat: list[float] = []
    order: list[int] = []  # the request index of each latency: pairs arms that sent the same inputs
    errors: list[int] = []
    lock = threading.Lock()
    counter = iter(range(n))
    stop_at = time.monotonic() + budget_s

    def client():
        session = requests.Session()
        while time.monotonic() < stop_at:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t = time.perf_counter()
            r = session.post(
                f"{url}/v1/tasks/{task}/predict",
                json={"input": inputs[i % len(inputs)], **extra},
                timeout=600,
            )
            dt = time.perf_counter() - t
            with lock:
                if r.status_code == 200:
                    lat.append(dt)
                    order.append(i)
                else:
                    errors.append(r.status_code)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": errors,
        "wall_s": wall,
        "rps": len(lat) / wall if wall else None,
        "p50_s": _pct(lat, 50),
        "p50_ci_s": median_ci(lat),
        "p99_s": _pct(lat, 99),
        "latencies_s": [round(x, 5) for _, x in sorted(zip(order, lat))],
        "request_index": sorted(order),
    }


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


# --------------------------------------------------------------------------------------------
# Intervals: every latency is saved, so these can be recomputed from the JSON
# --------------------------------------------------------------------------------------------

N_BOOT = 4000


def median_ci(xs: list[float], seed: int = 0) -> list[float] | None:
    """95% percentile-bootstrap interval of the median latency."""
    import numpy as np

    if len(xs) < 2:
        return None
    v = np.asarray(xs, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(v), size=(N_BOOT, len(v)))
    lo, hi = np.quantile(np.median(v[idx], axis=1), [0.025, 0.975])
    return [float(lo), float(hi)]


def ratio_ci(a: dict, b: dict, stat: str = "median", seed: int = 0) -> list[float] | None:
    """95% bootstrap interval of stat(a's latencies) / stat(b's). Requests that both arms sent (the same
    index, so the same input) are resampled jointly (paired); otherwise the arms are resampled apart.
    ``stat="mean"`` gives the throughput ratio b/a through Little's law (rps = clients / mean latency)
    at equal client counts."""
    import numpy as np

    la, lb = a.get("latencies_s") or [], b.get("latencies_s") or []
    if len(la) < 2 or len(lb) < 2:
        return None
    f = np.median if stat == "median" else np.mean
    rng = np.random.default_rng(seed)
    va, vb = np.asarray(la, dtype=float), np.asarray(lb, dtype=float)
    if a.get("request_index") == b.get("request_index"):
        idx = rng.integers(0, len(va), size=(N_BOOT, len(va)))
        r = f(va[idx], axis=1) / f(vb[idx], axis=1)
    else:
        ia = rng.integers(0, len(va), size=(N_BOOT, len(va)))
        ib = rng.integers(0, len(vb), size=(N_BOOT, len(vb)))
        r = f(va[ia], axis=1) / f(vb[ib], axis=1)
    lo, hi = np.quantile(r, [0.025, 0.975])
    return [float(lo), float(hi)]


def throughput_ratio_ci(single: dict, batched: dict) -> list[float] | None:
    """95% interval of batched rps / single rps at the same client count. The rps come from wall time (one
    number per arm), so the spread is borrowed from Little's law: the bootstrap interval of
    mean(single latency) / mean(batched latency), scaled to be centred on the measured ratio."""
    import numpy as np

    ci = ratio_ci(single, batched, stat="mean")
    if ci is None or not single.get("rps") or not batched.get("rps"):
        return None
    little = float(np.mean(single["latencies_s"]) / np.mean(batched["latencies_s"]))
    scale = (batched["rps"] / single["rps"]) / little
    return [ci[0] * scale, ci[1] * scale]


def paired(a: dict, b: dict) -> bool:
    return bool(a.get("request_index")) and a.get("request_index") == b.get("request_index")


def _ci(x: list[float] | None, digits: int = 2) -> str:
    return "" if not x else f" [{x[0]:.{digits}f}, {x[1]:.{digits}f}]"


def per_request_prompt(
    model_name: str, task: Task, settings: dict, inputs: list[str], n: int, sha: str
) -> dict:
    """The prompt processed again for every request, in process (same model, prompt and scoring)."""
    from manyicl.caching import PromptCache
    from manyicl.serve.config import ServeConfig, TaskSettings
    from manyicl.serve.prompts import build_served_task, encode_inputs, score_encoded
    from manyicl.serve.service import load_for_serving

    model, tok = load_for_serving(ServeConfig(model=model_name))
    st = build_served_task(task, tok, TaskSettings(**settings))
    assert st.prompt_sha256 == sha, "the in-process prompt differs from the server's"
    lat, prefill = [], []
    for x in inputs[: max(n, 1)]:
        t = time.perf_counter()
        pc = PromptCache(model, st.prompt_ids)
        score_encoded(st, pc, tok, encode_inputs(st, [x], None), 1024)
        lat.append(time.perf_counter() - t)
        prefill.append(pc.prefill_s)
    t = time.perf_counter()
    path = Path(tempfile.mkdtemp()) / "c.safetensors"
    pc.save(path, {"k": "v"})
    save_s = time.perf_counter() - t
    t = time.perf_counter()
    PromptCache.load(path, model, {"k": "v"}, prompt_ids=st.prompt_ids)
    load_s = time.perf_counter() - t
    return {
        "requests": len(lat),
        "p50_s": _pct(lat, 50),
        "p50_ci_s": median_ci(lat),
        "latencies_s": [round(x, 5) for x in lat],
        "prefill_s": statistics.median(prefill),
        "cache_save_s": save_s,
        "cache_load_s": load_s,
        "cache_mb": path.stat().st_size / 2**20,
    }


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny random model and a synthetic 150-way task")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tasks", default="clinc150,sst2", help="shared task names (comma-separated)")
    ap.add_argument("--shots", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=4096)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument(
        "--requests", type=int, default=0, help="requests per level (0: 4 x clients, at least 16)"
    )
    ap.add_argument("--budget-s", type=float, default=300, help="time limit per load level")
    ap.add_argument("--per-request", type=int, default=3, help="requests for the per-request-prompt arm")
    ap.add_argument("--no-one-by-one", action="store_true", help="skip the unbatched server (and cold start)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per server (0: default)")
    ap.add_argument("--top-k", type=int, default=1, help="top_k of the pruned-search arm (0: skip it)")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    model = "tiny-random-llama" if a.tiny else a.model
    levels = [int(c) for c in a.concurrency.split(",")]
    if a.tiny and not a.requests:
        a.requests, a.per_request = 16, 2
    tasks = load_tasks([t for t in a.tasks.split(",") if t], a.tiny)
    settings = {"shots": a.shots, "max_length": a.max_length}
    work = Path(tempfile.mkdtemp(prefix="bench_serve."))
    roots, state = work / "roots", work / "state"
    for t in tasks:
        write_task_dir(t, roots / t.name.replace(":", "_"))
    # no 504s: a request waits as long as the load makes it (the budget per level bounds the run)
    threads = ["--request-timeout-s", "3600", *(["--threads", str(a.threads)] if a.threads else [])]
    results: dict = {"model": model, "machine": platform.processor() or platform.machine(), "tasks": {}}
    servers: list[ServerProc] = []
    try:
        batched = ServerProc(model, state, roots, work / "batched.log", threads)
        servers.append(batched)
        results["server_start_s"] = batched.wait_ready()
        for t in tasks:
            r = requests.post(
                f"{batched.url}/v1/tasks",
                json={"path": str(roots / t.name.replace(":", "_")), "settings": settings},
            )
            r.raise_for_status()
            d = r.json()
            results["tasks"][t.name] = {
                "labels": len(t.labels),
                "shots": d["shots"],
                "prompt_tokens": d["prompt_tokens"],
                "prompt_sha256": d["prompt_sha256"],
                "prefill_s": d["cache"]["last"]["seconds"],
                "batched": [],
                "batched_top_k": [],
                "top_k": a.top_k or None,
            }
        single = None
        if not a.no_one_by_one:
            # its own copy of the state (one server per folder): its first requests load the caches from disk
            shutil.copytree(state, work / "state_single", ignore=shutil.ignore_patterns(".manyicl.lock"))
            extra = [*threads, "--max-batch-inputs", "1", "--batch-wait-ms", "0"]
            single = ServerProc(model, work / "state_single", roots, work / "one_by_one.log", extra)
            servers.append(single)
            results["restart_s"] = single.wait_ready()
            for t in tasks:
                inputs = [e.input for e in t.split("test")]
                cold = load(single.url, t.name, inputs, 1, 1, a.budget_s)
                results["tasks"][t.name]["cold_first_request_s"] = cold["p50_s"]
                results["tasks"][t.name]["one_by_one"] = []
                results["tasks"][t.name]["one_by_one_top_k"] = []
        for c in levels:  # interleaved, so both arms see the same machine
            n = a.requests or max(16, 4 * c)
            for t in tasks:
                inputs = [e.input for e in t.split("test")]
                res = results["tasks"][t.name]
                res["batched"].append(load(batched.url, t.name, inputs, c, n, a.budget_s))
                if a.top_k:
                    res["batched_top_k"].append(load(batched.url, t.name, inputs, c, n, a.budget_s, a.top_k))
                if single is not None:
                    res["one_by_one"].append(load(single.url, t.name, inputs, c, n, a.budget_s))
                    if a.top_k:
                        res["one_by_one_top_k"].append(
                            load(single.url, t.name, inputs, c, n, a.budget_s, a.top_k)
                        )
        results["batched_metrics"] = {k: v for k, v in batched.metrics().items() if "_bucket" not in k}
        if single is not None:
            m = single.metrics()
            results["one_by_one_metrics"] = {k: v for k, v in m.items() if "_bucket" not in k}
            results["cache_load_s_total"] = m.get("manyicl_serve_cache_load_seconds_total")
            results["cache_disk_loads"] = m.get("manyicl_serve_cache_disk_loads_total")
    finally:
        for sv in servers:
            sv.stop()
    for t in tasks:
        res = results["tasks"][t.name]
        inputs = [e.input for e in t.split("test")]
        res["per_request_prompt"] = per_request_prompt(
            model, t, settings, inputs, a.per_request, res["prompt_sha256"]
        )
    shutil.rmtree(work, ignore_errors=True)  # prompt caches of every run would pile up in /tmp
    out = Path(a.out) if a.out else OUT / ("serve_tiny.json" if a.tiny else "serve.json")
    atomic_write_json(out, results)
    print(report(results))
    print(f"\nwritten: {out}")
    return 0


def _lowest(res: dict) -> int:
    """The smallest concurrency level run (the cached-latency column reads its p50)."""
    return min((b["clients"] for t in res["tasks"].values() for b in t["batched"]), default=1)


def _f(x, digits=3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def report(res: dict) -> str:
    """Tables read from the results alone. p50s carry a 95% bootstrap interval over requests; ratios carry
    one from resampling both arms (paired where both sent the same requests); throughput ratios borrow
    their spread from Little's law (``throughput_ratio_ci``)."""
    lines = [f"model {res['model']}, server start {res['server_start_s']:.1f} s", ""]
    lines.append(
        "| task | clients | batched req/s | p50 s [95% CI] | p99 s | one-by-one req/s | p50 s [95% CI] | p99 s "
        "| batched / one-by-one req/s [95% CI] |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for name, t in res["tasks"].items():
        singles = t.get("one_by_one") or [None] * len(t["batched"])
        for b, s in zip(t["batched"], singles):
            ratio = b["rps"] / s["rps"] if s and s["rps"] and b["rps"] else None
            rci = throughput_ratio_ci(s, b) if s else None
            lines.append(
                f"| {name} ({t['labels']}-way, {t['shots']} shots) | {b['clients']} | {_f(b['rps'], 2)} | "
                f"{_f(b['p50_s'])}{_ci(b.get('p50_ci_s'))} | {_f(b['p99_s'])} | {_f(s and s['rps'], 2)} | "
                f"{_f(s and s['p50_s'])}{_ci(s and s.get('p50_ci_s'))} | {_f(s and s['p99_s'])} | "
                f"{_f(ratio, 2)}x{_ci(rci)} |"
            )
    lines += [
        "",
        f"| task | cached p50 s (clients={_lowest(res)}) | prompt re-run per request p50 s | ratio [95% CI] | prefill s "
        "| cache load s | cold first request s |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for name, t in res["tasks"].items():
        pr, first = t["per_request_prompt"], t["batched"][0]
        cached = first["p50_s"]
        ratio = pr["p50_s"] / cached if cached else None
        lines.append(
            f"| {name} | {_f(cached)}{_ci(first.get('p50_ci_s'))} | {_f(pr['p50_s'])}{_ci(pr.get('p50_ci_s'))} | "
            f"{_f(ratio, 1)}x{_ci(ratio_ci(pr, first), 1)} | {_f(pr['prefill_s'])} | "
            f"{_f(pr['cache_load_s'])} | {_f(t.get('cold_first_request_s'))} |"
        )
    if any(t.get("batched_top_k") for t in res["tasks"].values()):
        lines += [
            "",
            "| task | clients | all options p50 s [95% CI] | top_k p50 s [95% CI] | speed-up [95% CI] | paired "
            "| top_k req/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, t in res["tasks"].items():
            for b, k in zip(t["batched"], t.get("batched_top_k") or []):
                ratio = b["p50_s"] / k["p50_s"] if b["p50_s"] and k["p50_s"] else None
                lines.append(
                    f"| {name} (top_k={t['top_k']}) | {b['clients']} | {_f(b['p50_s'])}{_ci(b.get('p50_ci_s'))} | "
                    f"{_f(k['p50_s'])}{_ci(k.get('p50_ci_s'))} | {_f(ratio, 1)}x{_ci(ratio_ci(b, k), 1)} | "
                    f"{'yes' if paired(b, k) else 'no'} | {_f(k['rps'], 2)} |"
                )
    if any(t.get("one_by_one_top_k") for t in res["tasks"].values()):
        # batching the pruned search: its passes are small (a query, then <= 64 trie nodes), so many
        # queries share what a pass costs whatever its size, unlike a 150-way all-options trie
        lines += [
            "",
            "| task | clients | top_k batched req/s | p50 s [95% CI] | top_k one-by-one req/s | p50 s [95% CI] "
            "| batched / one-by-one req/s [95% CI] |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, t in res["tasks"].items():
            for b, s in zip(t.get("batched_top_k") or [], t.get("one_by_one_top_k") or []):
                ratio = b["rps"] / s["rps"] if s["rps"] and b["rps"] else None
                lines.append(
                    f"| {name} (top_k={t['top_k']}) | {b['clients']} | {_f(b['rps'], 2)} | "
                    f"{_f(b['p50_s'])}{_ci(b.get('p50_ci_s'))} | {_f(s['rps'], 2)} | "
                    f"{_f(s['p50_s'])}{_ci(s.get('p50_ci_s'))} | {_f(ratio, 2)}x{_ci(throughput_ratio_ci(s, b))} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
