"""``manyicl serve`` tested as a user meets it: a real server process over loopback, a real HTTP client.

The server runs ``python -m manyicl serve --model tiny-random-llama`` (the tiny random model modeling
builds in memory, so no weights are needed) on a free loopback port. Its batch wait is long (200 ms) so
that concurrent requests deterministically land in one batch and a small queue fills. Served scores are
compared with eval's own scoring (``prepare_task`` + ``shot_plan`` + ``score_queries``) of the same
prompt; the server is killed with SIGKILL and restarted on its state folder.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

requests = pytest.importorskip("requests")

from manyicl.serve.metrics import parse_metrics  # noqa: E402
from manyicl.tasks import Example, Task, Template, write_task_dir  # noqa: E402

from conftest import toy_task  # noqa: E402

KEY = "test-key-0123456789"
MAX_LENGTH = 1024


def gen_task() -> Task:
    """A generation task (no labels: answers are decoded greedily)."""
    train = [Example(f"word {i}", f"w{i % 7}") for i in range(40)]
    test = [Example(f"term {i}", f"w{i % 7}") for i in range(6)]
    return Task(
        name="echo",
        category="qa",
        template=Template(input_prefix="Q: ", output_prefix="A:"),
        splits={"train": train, "test": test},
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``manyicl serve`` process on a loopback port; ``kill()`` is SIGKILL (no cleanup runs)."""

    def __init__(self, state: Path, roots: Path, log: Path):
        self.state, self.roots, self.log = state, roots, log
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> Server:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            MANYICL_API_KEY=KEY,
            OMP_NUM_THREADS="1",
        )
        cmd = [
            sys.executable,
            "-m",
            "manyicl",
            "-q",
            "serve",
            "--model",
            "tiny-random-llama",
            "--state-dir",
            str(self.state),
            "--allow-root",
            str(self.roots),
            "--port",
            str(port),
            "--max-length",
            str(MAX_LENGTH),
            "--batch-wait-ms",
            "200",
            "--max-queue",
            "3",
            "--max-inputs-per-request",
            "8",
            "--max-request-bytes",
            "20000",
        ]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        return self

    def wait(self) -> Server:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not come up:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def call(self, method: str, path: str, key: str | None = KEY, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kw)

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.call("GET", "/metrics").text)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    roots = base / "roots"
    write_task_dir(toy_task(60), roots / "toy")
    write_task_dir(gen_task(), roots / "echo")
    server = Server(base / "state", roots, base / "server.log").start()
    _offline_model()  # the test process's own imports and model meanwhile, on the other core
    server.wait()
    yield {"server": server, "roots": roots, "base": base}
    server.stop()


@functools.cache
def _offline_model():
    import manyicl.evaluate  # noqa: F401 - imported here, while the server starts
    from manyicl.modeling import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    return tiny_model(len(tok)).eval(), tok


def _offline(task: Task, described: dict):
    """Eval's own prompt and scores for ``task``: prepare_task + shot_plan + score_queries (tiny model)."""
    from manyicl import evaluate as ev
    from manyicl.caching import PromptCache, prompt_hash
    from manyicl.config import EvalConfig
    from manyicl.evaluate import prepare_task, score_queries, shot_plan

    model, tok = _offline_model()
    cfg = EvalConfig(max_length=MAX_LENGTH, shots=["max"], seeds=[0], dev_queries=0)
    pt = prepare_task(task, tok, cfg)
    pt.reserve = described["reserve_tokens"]  # eval sizes it from its test queries; the server from the pool
    plan, n_fit = shot_plan(pt, cfg, 0)
    build_prompt = getattr(ev, "build_prompt", None) or ev._prompt  # renamed while evaluate.py is split
    prompt = build_prompt(pt, plan["max"])
    pc = PromptCache(model, prompt)
    scores, preds = score_queries(pc, pt, tok, "none")
    return prompt_hash(prompt), n_fit, pt.queries, scores, preds


# --------------------------------------------------------------------------------------------
# A running server
# --------------------------------------------------------------------------------------------


def test_register_builds_the_max_shot_prompt_and_its_cache(world):
    s = world["server"]
    r = s.call("POST", "/v1/tasks", json={"path": str(world["roots"] / "toy")})
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["name"] == "toy" and d["mode"] == "options" and d["status"] == "ready"
    assert d["shots"] == d["max_shots_fit"] > 10
    assert d["prompt_tokens"] <= MAX_LENGTH - d["reserve_tokens"]
    assert d["cache"]["in_memory"] and d["cache"]["file_bytes"] > 0
    assert d["cache"]["last"]["source"] == "prefill"
    assert s.call("GET", "/v1/tasks/toy").json()["prompt_sha256"] == d["prompt_sha256"]
    assert [t["name"] for t in s.call("GET", "/v1/tasks").json()["tasks"]] == ["toy"]
    assert s.call("POST", "/v1/tasks", json={"path": str(world["roots"] / "echo")}).status_code == 201


def test_concurrent_predictions_are_batched_and_equal_offline_eval_scores(world):
    """Two concurrent requests share one batch, and every label and option log-prob equals what eval's
    scoring gives on eval's own prompt for the same settings (the prompt hashes match too)."""
    s = world["server"]
    described = s.call("GET", "/v1/tasks/toy").json()
    sha, n_fit, queries, scores, preds = _offline(toy_task(60), described)
    assert sha == described["prompt_sha256"] and n_fit == described["shots"]
    inputs = [q.example.input for q in queries]
    halves = [inputs[:8], inputs[8:]]
    out: list = [None, None]
    barrier = threading.Barrier(2)

    def ask(i):
        barrier.wait()
        out[i] = s.call("POST", "/v1/tasks/toy/predict", json={"inputs": halves[i]})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in out), [r.text for r in out]
    served = out[0].json()["predictions"] + out[1].json()["predictions"]
    for r in out:  # one batch held both requests
        assert r.json()["batch"]["requests"] == 2 and r.json()["batch"]["inputs"] == len(inputs)
    for q, sc, pred, got in zip(queries, scores, preds, served):
        assert got["label"] == pred
        assert list(got["logprobs"]) == list(q.options)
        assert list(got["logprobs"].values()) == pytest.approx(sc["option_scores"], abs=2e-4)
        assert not got["truncated"]
    # top_k: the same labels, the k best options' log-probs (best first), the others pruned
    topped = []
    for half in halves:
        r = s.call("POST", "/v1/tasks/toy/predict", json={"inputs": half, "top_k": 2})
        assert r.status_code == 200, r.text
        topped += r.json()["predictions"]
    for q, sc, pred, got in zip(queries, scores, preds, topped):
        assert got["label"] == pred == next(iter(got["logprobs"]))
        want = sorted(zip(sc["option_scores"], q.options), reverse=True)[:2]
        assert list(got["logprobs"]) == [o for _, o in want]
        assert list(got["logprobs"].values()) == pytest.approx([v for v, _ in want], abs=2e-4)
        assert got["pruned"] == len(q.options) - 2


def test_generation_task_answers_text_equal_to_offline_decoding(world):
    s = world["server"]
    described = s.call("GET", "/v1/tasks/echo").json()
    assert described["mode"] == "generate"
    sha, _, queries, _, preds = _offline(gen_task(), described)
    assert sha == described["prompt_sha256"]
    r = s.call("POST", "/v1/tasks/echo/predict", json={"inputs": [q.example.input for q in queries]})
    assert r.status_code == 200, r.text
    assert [p["text"] for p in r.json()["predictions"]] == preds


def test_inline_task_is_validated_like_a_folder_and_served(world):
    s = world["server"]
    bad = {
        "name": "inline",
        "category": "cls",
        "labels": ["pos", "neg"],
        "examples": [{"input": "good", "output": "pos"}, {"input": "bad", "output": "meh"}],
    }
    r = s.call("POST", "/v1/tasks", json=bad)
    assert r.status_code == 422
    assert any(
        p["where"].startswith("task") or p["where"] == "examples[1]" for p in r.json()["error"]["problems"]
    )
    assert "meh" in r.text
    good = dict(bad, examples=[{"input": f"text {i}", "output": ["pos", "neg"][i % 2]} for i in range(30)])
    good["settings"] = {"max_length": 512, "shots": 8}
    r = s.call("POST", "/v1/tasks", json=good)
    assert r.status_code == 201, r.text
    assert r.json()["shots"] == 8 and r.json()["settings"]["max_length"] == 512
    p = s.call("POST", "/v1/tasks/inline/predict", json={"input": "text 3"})
    assert p.status_code == 200 and p.json()["predictions"][0]["label"] in ("pos", "neg")
    assert s.call("POST", "/v1/tasks", json=good).status_code == 409  # taken, no replace
    assert s.call("DELETE", "/v1/tasks/inline").status_code == 200
    assert s.call("GET", "/v1/tasks/inline").status_code == 404
    assert not list((world["base"] / "state" / "tasks").glob("inline.*"))  # its folder went with it


def test_error_statuses_name_the_problem(world):
    s = world["server"]
    toy = world["roots"] / "toy"
    cases = [
        (s.call("GET", "/v1/tasks", key=None), 401),
        (s.call("GET", "/v1/tasks", key="wrong-key-123456"), 401),
        (s.call("POST", "/v1/tasks/nope/predict", json={"inputs": ["x"]}), 404),
        (s.call("GET", "/v1/tasks/nope"), 404),
        (s.call("DELETE", "/v1/tasks/nope"), 404),
        (s.call("GET", "/v1/nothing-here"), 404),
        (s.call("POST", "/v1/tasks/toy/predict", json={"inputs": "not a list"}), 422),
        (s.call("POST", "/v1/tasks/toy/predict", json={"inputs": ["x"], "bogus": 1}), 422),
        (s.call("POST", "/v1/tasks/toy/predict", json={}), 400),
        (s.call("POST", "/v1/tasks/toy/predict", json={"inputs": ["x"], "top_k": 0}), 422),
        (s.call("POST", "/v1/tasks/echo/predict", json={"inputs": ["x"], "top_k": 1}), 422),
        (s.call("POST", "/v1/tasks", json={"path": str(toy), "name": "../evil"}), 422),
        (
            s.call(
                "POST", "/v1/tasks", json={"path": str(toy), "replace": True, "settings": {"shots": 10_000}}
            ),
            422,
        ),
        (s.call("POST", "/v1/tasks", json={"path": str(toy), "settings": {"max_lenght": 9}}), 422),
        (s.call("POST", "/v1/tasks", json={"path": "/etc"}), 403),
        (s.call("POST", "/v1/tasks", json={"path": str(toy) + "/../../.."}), 403),
        (s.call("POST", "/v1/tasks", json={"path": str(toy)}), 409),
        (s.call("POST", "/v1/tasks/toy/predict", json={"inputs": ["x"] * 9}), 413),
        (s.call("POST", "/v1/tasks/toy/predict", json={"inputs": ["x" * 30_000]}), 413),
        (  # no Content-Length (chunked): counted while it streams in
            s.call("POST", "/v1/tasks/toy/predict", data=iter([b'{"inputs": ["', b"y" * 25_000, b'"]}'])),
            413,
        ),
    ]
    for r, status in cases:
        assert r.status_code == status, (r.request.method, r.request.url, r.text[:300])
        err = r.json()["error"]
        assert err["code"] and err["message"] and "Traceback" not in r.text
    assert "Bearer" in cases[0][0].json()["error"]["message"]
    assert "shots" in cases[12][0].text and "max_lenght" in cases[13][0].text
    assert "top_k" in cases[9][0].text and "top_k" in cases[10][0].text


def test_full_queue_answers_429_and_a_late_answer_504(world):
    """max_queue 3 and a 200 ms batch wait: of 10 requests sent at once 3 wait and the rest are refused;
    a request allowing 50 ms cannot be answered before the batch closes."""
    s = world["server"]
    before = s.metrics()
    barrier = threading.Barrier(10)
    codes: list[int] = []

    def ask():
        barrier.wait()
        codes.append(s.call("POST", "/v1/tasks/toy/predict", json={"input": "query 1"}).status_code)

    threads = [threading.Thread(target=ask) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 429 in codes and 200 in codes and set(codes) <= {200, 429}, codes
    r = s.call("POST", "/v1/tasks/toy/predict", json={"input": "query 2", "timeout_s": 0.05})
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    after = s.metrics()
    key = 'manyicl_serve_rejected_total{reason="queue_full"}'
    assert after[key] - before.get(key, 0) == codes.count(429)
    assert after['manyicl_serve_rejected_total{reason="timeout"}'] >= 1


def test_metrics_and_open_endpoints(world):
    s = world["server"]
    assert s.call("GET", "/metrics", key=None).status_code == 401
    m = s.metrics()
    assert m['manyicl_serve_requests_total{route="/v1/tasks/{name}/predict",status="200"}'] >= 3
    assert m['manyicl_serve_request_seconds_bucket{route="/v1/tasks/{name}/predict",le="+Inf"}'] >= 3
    assert m["manyicl_serve_queue_depth"] == 0
    assert m["manyicl_serve_prefills_total"] >= 2 and m["manyicl_serve_prefill_seconds_total"] > 0
    assert m["manyicl_serve_cache_hits_total"] >= 1 and m["manyicl_serve_cache_misses_total"] >= 2
    assert (
        m['manyicl_serve_cache_bytes{where="ram"}'] > 0 and m['manyicl_serve_cache_bytes{where="disk"}'] > 0
    )
    assert (
        m["manyicl_serve_batch_requests_sum"] > m["manyicl_serve_batch_requests_count"]
    )  # some batch held 2+
    health = s.call("GET", "/healthz", key=None)
    assert health.status_code == 200 and health.json()["tasks"] == 2
    schema = s.call("GET", "/openapi.json", key=None).json()
    assert {"/v1/tasks", "/v1/tasks/{name}", "/v1/tasks/{name}/predict", "/healthz"} <= set(schema["paths"])


def test_restart_after_kill_9_brings_tasks_and_caches_back(world):
    """SIGKILL while a large registration is being built; on restart the finished tasks answer exactly as
    before from their cache files (no prefill), the corrupted one is rebuilt, nothing half-written is left."""
    s = world["server"]
    state = s.state
    before = {
        name: s.call("POST", f"/v1/tasks/{name}/predict", json={"inputs": ["query 4", "term 2"]}).json()
        for name in ("toy", "echo")
    }
    echo_file = next((state / "caches").glob("echo.*.safetensors"))
    blob = bytearray(echo_file.read_bytes())
    blob[len(blob) // 2 : len(blob) // 2 + 64] = bytes(64)  # a damaged sector inside the tensors
    echo_file.write_bytes(bytes(blob))
    big = {
        "name": "big",
        "category": "cls",
        "labels": ["a", "b", "c"],
        "examples": [{"input": f"example number {i} " * 3, "output": "abc"[i % 3]} for i in range(3000)],
        "settings": {"max_length": 4096},
    }
    t = threading.Thread(target=lambda: _quiet(s.call, "POST", "/v1/tasks", json=big), daemon=True)
    t.start()
    time.sleep(0.5)
    s.kill()
    s.start().wait()
    names = {x["name"] for x in s.call("GET", "/v1/tasks").json()["tasks"]}
    assert {"toy", "echo"} <= names <= {"toy", "echo", "big"}
    for name, old in before.items():
        new = s.call("POST", f"/v1/tasks/{name}/predict", json={"inputs": ["query 4", "term 2"]}).json()
        assert new["prompt_sha256"] == old["prompt_sha256"]
        assert new["predictions"] == old["predictions"]
    m = s.metrics()
    assert m["manyicl_serve_cache_disk_loads_total"] == 1  # toy: loaded, not recomputed
    assert m['manyicl_serve_cache_rebuilds_total{reason="corrupt"}'] == 1  # echo: refused, rebuilt
    assert m["manyicl_serve_prefills_total"] == 1
    assert echo_file.read_bytes() != bytes(blob)  # replaced by a good file
    registry = json.loads((state / "registry.json").read_text())["tasks"]
    assert set(registry) == names
    leftovers = [p.name for p in state.rglob(".*") if p.name != ".manyicl.lock"]
    assert not leftovers, leftovers
    inline = {Path(e["path"]).name for e in registry.values() if e["source"] == "inline"}
    assert {p.name for p in (state / "tasks").iterdir()} == inline
    for name in names:  # every registered task has a loadable (or rebuildable) prompt
        assert s.call("POST", f"/v1/tasks/{name}/predict", json={"input": "q"}).status_code == 200


def _quiet(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except requests.RequestException:
        pass  # the server was killed under it


# --------------------------------------------------------------------------------------------
# Pieces, in process (deterministic)
# --------------------------------------------------------------------------------------------


def test_batcher_groups_a_task_keeps_others_in_order_and_bounds_the_queue():
    from manyicl.serve.batcher import Batcher
    from manyicl.serve.errors import QueueFull

    gate = threading.Event()
    seen: list[tuple[str, list[int]]] = []

    def run(task, jobs):
        gate.wait(5)
        seen.append((task, [j.payload for j in jobs]))
        for j in jobs:
            j.future.set_result(j.payload)

    b = Batcher(run, wait_s=0.05, max_batch_inputs=10, max_queue=4)
    b.start()
    try:
        first = b.submit_predict("a", 1, 0)  # taken by the worker, which blocks on the gate
        time.sleep(0.2)
        jobs = [b.submit_predict(t, 1, i) for i, t in enumerate("abab", start=1)]
        with pytest.raises(QueueFull):
            b.submit_predict("a", 1, 99)
        b.cancel(jobs[3])  # a request that gave up frees its place
        jobs.append(b.submit_predict("a", 1, 5))
        gate.set()
        assert [j.future.result(5) for j in [first, *jobs[:3], jobs[4]]] == [0, 1, 2, 3, 5]
        assert seen == [("a", [0]), ("a", [1, 3, 5]), ("b", [2])]
        assert jobs[3].future.cancelled()
    finally:
        b.stop()


def test_folders_outside_the_allowed_roots_are_refused(tmp_path):
    from manyicl.serve.errors import Forbidden
    from manyicl.serve.registry import resolve_under_roots

    root = tmp_path / "root"
    (root / "ok").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "link").symlink_to(tmp_path / "secret")
    assert resolve_under_roots(str(root / "ok"), [str(root)]) == (root / "ok").resolve()
    for bad in (root / "link", root / ".." / "secret", tmp_path / "rootx"):
        with pytest.raises(Forbidden):
            resolve_under_roots(str(bad), [str(root)])
    with pytest.raises(Forbidden, match="allow-root"):
        resolve_under_roots(str(root / "ok"), [])


def test_memory_lru_and_damaged_or_foreign_cache_files(tmp_path, tok):
    """The LRU keeps the budget; a file made for other weights or damaged is rebuilt, never used."""
    from manyicl.caching import model_key
    from manyicl.modeling import tiny_model
    from manyicl.serve.config import TaskSettings
    from manyicl.serve.metrics import ServeMetrics
    from manyicl.serve.prompts import build_served_task
    from manyicl.serve.store import CacheStore, cache_bytes

    model = tiny_model(len(tok)).eval()
    settings = TaskSettings(max_length=256)
    tasks = [build_served_task(toy_task(30, name=f"t{i}"), tok, settings) for i in range(3)]
    metrics = ServeMetrics()
    store = CacheStore(tmp_path, model, model_key(model, "tiny", None, tok), 10**9, metrics)
    one = cache_bytes(store.get(tasks[0]))
    store.budget = int(2.5 * one)
    for st in tasks[1:]:
        store.get(st)
    assert not store.in_ram("t0") and store.in_ram("t1") and store.in_ram("t2")
    assert metrics.cache_evictions.value() == 1 and store.ram_bytes() <= store.budget
    assert store.get(tasks[0]) is not None and metrics.cache_disk_loads.value() == 1  # back from disk
    other = tiny_model(len(tok), seed=1).eval()
    foreign = CacheStore(tmp_path, other, model_key(other, "tiny", None, tok), 10**9, ServeMetrics())
    foreign.path = store.path  # the same file name, another model's key inside
    foreign.get(tasks[1])
    assert foreign.metrics.cache_rebuilds.value(reason="mismatch") == 1
    store.drop("t2", files=False)
    path = store.path("t2")
    path.write_bytes(path.read_bytes()[:100])  # cut short
    store.get(tasks[2])
    assert metrics.cache_rebuilds.value(reason="corrupt") == 1
    assert metrics.prefills.value() == 3 + 1  # three first builds, the damaged one again


def test_metrics_render_the_prometheus_text_format():
    from manyicl.serve.metrics import Counter, Histogram

    c = Counter("x_total", "things", ("kind",))
    c.inc(kind='a"b')
    h = Histogram("y_seconds", "time", buckets=(0.1, 1.0))
    h.observe(0.5)
    h.observe(5)
    text = "\n".join(c.render() + h.render())
    assert '# TYPE x_total counter\nx_total{kind="a\\"b"} 1' in text
    assert 'y_seconds_bucket{le="0.1"} 0' in text and 'y_seconds_bucket{le="1"} 1' in text
    assert 'y_seconds_bucket{le="+Inf"} 2' in text and "y_seconds_count 2" in text


def test_cli_flags_and_environment_make_a_validated_config(monkeypatch):
    from manyicl.cli import build_parser
    from manyicl.errors import ConfigError
    from manyicl.serve.config import config_from_args

    monkeypatch.setenv("MANYICL_API_KEY", "from-the-environment")
    a = build_parser().parse_args(
        ["serve", "--model", "tiny-random-llama", "--shots", "16", "--tasks", "a", "b"]
    )
    cfg = config_from_args(a)
    assert cfg.api_key == "from-the-environment" and cfg.defaults.shots == 16 and cfg.tasks == ["a", "b"]
    assert cfg.host == "127.0.0.1"
    with pytest.raises(ConfigError, match="max_queue"):
        config_from_args(build_parser().parse_args(["serve", "--max-queue", "0"]))
