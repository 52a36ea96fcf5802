"""The report of ``manyicl distill`` (seed 004): results.json/csv, the six figures and report.md from a
study's rows, and seed 004's claims checked against them. Reads rows (or the results.json written from
them) only; loads no model or task data and runs no workflow, so ``manyicl distill CONFIG --report``
rewrites a finished study from its results.json alone (:func:`report_from_results`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from .config import DistillConfig, load_config, to_dict
from .errors import ConfigError
from .fileio import atomic_save, atomic_write_json, atomic_write_text, check_output_dir, exclusive_lock
from .report import write_csv

LEGACY_OPTIM = {"warmup_steps": 0, "min_lr_ratio": 1.0, "max_grad_norm": 0.0, "weight_decay": 0.01}
"""What the students' optimiser was before ``DistillConfig.optim`` existed (constant LR, no clipping)."""

ROW_NUMBERS = (
    "in_domain", "out_of_domain", "inference_ms_per_query", "train_s", "train_tokens", "peak_rss_mb",
    "delta_rss_mb", "cuda_peak_mb", "steps", "final_loss", "trainable_params", "prompt_tokens",
)  # fmt: skip
"""Row fields the report formats or plots as numbers (each may be null)."""


def upgrade_settings(old: dict, optim_defaults: dict) -> dict:
    """Settings recorded before ``optim`` replaced the top-level ``lr`` (the committed results/distill),
    in today's keys: ``lr`` moves into ``optim``, whose other fields are what the students' optimiser
    was then (:data:`LEGACY_OPTIM`) over ``optim_defaults``. Settings that have ``optim`` come back as
    they are."""
    if not isinstance(old, dict) or "optim" in old:
        return old
    rest = {k: v for k, v in old.items() if k != "lr"}
    return rest | {"optim": optim_defaults | LEGACY_OPTIM | {"lr": old.get("lr", optim_defaults["lr"])}}


def notes_of(rows: list[dict]) -> list[str]:
    """The notes the report prints: each cell's note (e.g. biases added for BitFit), once, sorted."""
    return sorted({r["note"] for r in rows if r.get("note")})


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


# --------------------------------------------------------------------------------------------
# Tables, figures and claims
# --------------------------------------------------------------------------------------------


def _label(r: dict) -> str:
    return r["method"] if r["update"] == "-" else f"{r['method']}+{r['update']}"


def _plot_vs_k(
    rows: list[dict], labels: list[str], metrics: list[tuple[str, str]], path: Path, title: str
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6))
    axes = [axes] if len(metrics) == 1 else list(axes)
    for ax, (key, name) in zip(axes, metrics):
        for lab in labels:
            pts = sorted((r["k"], r[key]) for r in rows if _label(r) == lab and r.get(key) is not None)
            if not pts:
                continue
            if lab == "base":  # no support examples: a reference level
                ax.axhline(pts[0][1], linestyle=":", color="gray", label="base")
                continue
            ax.plot([k for k, _ in pts], [v for _, v in pts], marker="o", label=lab)
        ax.set_xlabel("support examples k")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_save(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return path


def _slope(rows: list[dict], lab: str, key: str) -> float | None:
    pts = sorted((r["k"], r[key]) for r in rows if _label(r) == lab and r.get(key) is not None)
    if len(pts) < 2:
        return None
    import numpy as np

    return float(np.polyfit([k for k, _ in pts], [v for _, v in pts], 1)[0])


def _mean(rows: list[dict], lab: str, key: str) -> float | None:
    vals = [r[key] for r in rows if _label(r) == lab and r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def distill_claims(
    rows: list[dict], updates: list[str], n_queries: int | None = None, n_ood_sets: int = 1
) -> list[str]:
    """Seed 004's claims, each checked against this run's numbers.

    With ``n_queries`` (test queries per set) an accuracy difference within the rough 95% binomial band
    of a difference of two accuracies is called noise; and when ICL itself does not beat the untrained
    student beyond that band, the accuracy claims are marked not testable (the teacher has nothing to
    distil)."""
    out = []
    cd = [f"cd+{u}" for u in updates]
    pb = [f"pbft+{u}" for u in updates]
    icl_ood, icl_in = _mean(rows, "icl", "out_of_domain"), _mean(rows, "icl", "in_domain")
    noise_in = 1.96 * math.sqrt(2 * 0.25 / n_queries) if n_queries else None
    noise_ood = noise_in / math.sqrt(max(n_ood_sets, 1)) if noise_in else None
    base_in = _mean(rows, "base", "in_domain")
    icl_best_in = max(
        (r["in_domain"] for r in rows if _label(r) == "icl" and r.get("in_domain") is not None), default=None
    )
    untestable = ""
    if noise_in and base_in is not None and icl_best_in is not None and icl_best_in - base_in < noise_in:
        untestable = (
            f"not testable here — ICL does not beat the untrained model beyond noise (best ICL in domain "
            f"{icl_best_in:.3f} vs base {base_in:.3f}, noise ±{noise_in:.2f} at {n_queries} queries), so the teacher "
            "has no in-context ability to distil; "
        )

    def verdict(diff: float, noise: float | None) -> str:
        if noise is not None and abs(diff) < noise:
            return untestable + f"within noise (±{noise:.2f})"
        return untestable + ("supported" if diff > 0 else "not supported")

    if icl_ood is not None:
        best_cd = max(((_mean(rows, c, "out_of_domain") or -1), c) for c in cd)
        if best_cd[0] >= 0:
            out.append(
                f"CD generalises out of domain better than ICL: {verdict(best_cd[0] - icl_ood, noise_ood)} (mean OOD "
                f"accuracy over k: best CD variant {best_cd[1]} {best_cd[0]:.3f} vs ICL {icl_ood:.3f}; seed 004 "
                "reports ~+50%)."
            )
    if icl_in is not None:
        others = [(_mean(rows, lab, "in_domain"), lab) for lab in ["base", *pb, *cd]]
        others = [(v, lab) for v, lab in others if v is not None]
        if others:
            top = max(others)
            out.append(
                f"ICL is best in domain: {verdict(icl_in - top[0] + 1e-12, noise_in)} (ICL {icl_in:.3f}; best other "
                f"{top[1]} {top[0]:.3f})."
            )
    for c, p in zip(cd, pb):
        sc, sp = _slope(rows, c, "delta_rss_mb"), _slope(rows, p, "delta_rss_mb")
        if sc is not None and sp is not None:
            verdict = "supported" if sp > max(sc, 0) else "not supported"
            out.append(
                f"Training memory grows with k for PBFT but hardly for CD ({c.split('+')[1]}): {verdict} "
                f"(slope of peak RSS over k: PBFT {sp:+.1f} MB per support, CD {sc:+.1f} MB per support)."
            )
        tc, tp = _slope(rows, c, "train_s"), _slope(rows, p, "train_s")
        if tc is not None and tp is not None:
            verdict = "supported" if tp > max(tc, 0) else "not supported"
            out.append(
                f"Training time grows with k for PBFT, stays flat for CD ({c.split('+')[1]}): {verdict} "
                f"(slopes: PBFT {tp:+.2f} s per support, CD {tc:+.2f} s per support)."
            )
    for method in ("pbft", "cd"):
        full = _mean(rows, f"{method}+full", "delta_rss_mb")
        for u in ("lora", "bitfit"):
            peft = _mean(rows, f"{method}+{u}", "delta_rss_mb")
            if full is not None and peft is not None:
                verdict = "supported" if peft < full else "not supported"
                out.append(
                    f"{method.upper()}+{u} needs less training memory than full updates: {verdict} "
                    f"(mean peak RSS increase {peft:.0f} MB vs {full:.0f} MB)."
                )
    return out


def write_report(cfg: DistillConfig, rows: list[dict], student: str, recorded_config: dict | None) -> Path:
    """Write results.json, results.csv, the six figures and report.md of a study from its ``rows`` (one
    per cell) and the student's shape. results.json records ``recorded_config``: the workflow passes its
    settings; a rewrite passes the ones recorded before, verbatim (not completed with defaults added
    since), or None for a study whose results.json recorded none (then config.yaml holds them)."""
    out = Path(cfg.output_dir)
    record = {"config": recorded_config} if recorded_config is not None else {}
    atomic_write_json(out / "results.json", record | {"student": student, "rows": rows})
    notes = notes_of(rows)
    flat = [
        {k: v for k, v in r.items() if k != "per_task"}
        | {f"acc_{t}": a for t, a in r.get("per_task", {}).items()}
        for r in rows
    ]
    fields = list(dict.fromkeys(k for r in flat for k in r))
    write_csv(flat, out / "results.csv", fields)
    updates = list(cfg.updates)
    first = updates[0] if updates else "full"
    main = ["base", "icl", f"pbft+{first}", f"cd+{first}"]
    acc = [("in_domain", "in-domain accuracy"), ("out_of_domain", "out-of-domain accuracy")]
    cost = [("delta_rss_mb", "peak training RSS increase (MB)"), ("train_s", "training time (s)")]
    pbft, cd = [f"pbft+{u}" for u in updates], [f"cd+{u}" for u in updates]
    figs = [  # seed 004's Figures 1-6: accuracy and cost, overall and per update kind
        ("fig1_accuracy.png", main, acc, "Baseline, ICL, PBFT, CD"),
        ("fig2_cost.png", main[2:], cost, "Training cost"),
        ("fig3_pbft_variants.png", ["base", *pbft], acc, "PBFT variants"),
        ("fig4_pbft_cost.png", pbft, cost, "PBFT variants: cost"),
        ("fig5_cd_variants.png", ["base", *cd], acc, "CD variants"),
        ("fig6_cd_cost.png", cd, cost, "CD variants: cost"),
    ]
    for name, labels, metrics, title in figs:
        _plot_vs_k(rows, labels, metrics, out / "plots" / name, title)
    ood_names = list(cfg.out_of_domain)
    head = [
        "method",
        "k",
        "in-domain",
        "OOD mean",
        *ood_names,
        "train s",
        "peak RSS +MB",
        "CUDA MB",
        "trainable",
        "infer ms/query",
        "prompt tokens",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: (r["k"], r["method"], r["update"])):
        per = r.get("per_task", {})
        cuda = r.get("cuda_peak_mb")
        lines.append(
            "| "
            + " | ".join(
                [
                    _label(r),
                    str(r["k"]),
                    _fmt(r.get("in_domain")),
                    _fmt(r.get("out_of_domain")),
                    *[_fmt(per.get(t)) for t in ood_names],
                    f"{r['train_s']:.1f}" if "train_s" in r else "-",
                    f"{r['delta_rss_mb']:.0f}" if "delta_rss_mb" in r else "-",
                    f"{cuda:.0f}" if cuda is not None else "-",
                    f"{r['trainable_params']:,}" if "trainable_params" in r else "-",
                    f"{r['inference_ms_per_query']:.1f}",
                    str(r.get("prompt_tokens", "-")),
                ]
            )
            + " |"
        )
    text = [
        "# Context distillation report (seed 004)",
        "",
        f"Teacher `{cfg.model.name_or_path}`; student: {student}. Binary NLI with a yes/no verbalizer; supports and "
        f"training queries from {cfg.in_domain} (neutral removed); out of domain: {', '.join(ood_names)}. "
        f"k in {cfg.shots}; {cfg.train_queries} training queries, {cfg.epochs} epochs, batch {cfg.batch_size}; "
        f"KL over {'the verbalizer tokens' if cfg.kl == 'verbalizer' else 'the full vocabulary'}, alpha={cfg.alpha}, "
        f"T={cfg.temperature}; LoRA r={cfg.lora.r}, alpha={cfg.lora.alpha:g} on {', '.join(cfg.lora.target_modules)}; "
        f"{cfg.eval_queries} test queries per task. PBFT and CD students answer without support examples; ICL is the "
        "teacher with the k supports in its prompt.",
        "",
    ]
    if notes:
        text += ["Notes: " + "; ".join(notes) + ".", ""]
    text += ["## Results", "", *lines, ""]
    text += [
        "Peak RSS is sampled during each method's training phase (teacher targets included for CD) and given as the "
        "increase over the process's memory before it (after the first cells the allocator reuses memory freed by "
        "earlier ones, so small deltas understate); CUDA is `torch.cuda.max_memory_allocated` when a GPU is used.",
        "",
        "## Seed 004's claims against these numbers",
        "",
        *[f"- {c}" for c in distill_claims(rows, updates, cfg.eval_queries, len(cfg.out_of_domain))],
        "",
        "## Figures",
        "",
        *[f"![{n}](plots/{n})" for n, *_ in figs],
        "",
    ]
    return atomic_write_text(out / "report.md", "\n".join(text))


# --------------------------------------------------------------------------------------------
# Rewriting a finished study from its results.json (``manyicl distill CONFIG --report``)
# --------------------------------------------------------------------------------------------


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _row_problem(r) -> str | None:
    """What makes ``r`` unusable as a row of the report (None: usable)."""
    if not isinstance(r, dict):
        return f"is {type(r).__name__}, not a mapping"
    missing = [k for k in ("method", "update", "k", "inference_ms_per_query") if k not in r]
    if missing:
        return f"has no {', '.join(missing)}"
    if not isinstance(r["method"], str) or not isinstance(r["update"], str):
        return "method and update must be strings"
    if not isinstance(r["k"], int) or isinstance(r["k"], bool):
        return f"k must be an integer, got {r['k']!r}"
    if not _is_number(r["inference_ms_per_query"]):
        return f"inference_ms_per_query must be a number, got {r['inference_ms_per_query']!r}"
    bad = [k for k in ROW_NUMBERS if r.get(k) is not None and not _is_number(r[k])]
    if bad:
        return f"{', '.join(bad)} must be numbers (or null)"
    per = r.get("per_task", {})
    if not isinstance(per, dict) or not all(v is None or _is_number(v) for v in per.values()):
        return "per_task must map task names to accuracies"
    if not isinstance(r.get("note", ""), str):
        return "note must be a string"
    return None


def read_results(path: Path) -> dict:
    """A distill results.json, checked to be one the report can be written from; refused (naming the
    file and what is wrong in it) otherwise."""
    fix = "rerun the study (without --report) to rewrite it"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError.single(str(path), f"cannot be read ({e.strerror})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError.single(str(path), f"not readable JSON ({e}): {fix}") from None
    missing = [k for k in ("student", "rows") if not isinstance(data, dict) or k not in data]
    if missing:
        raise ConfigError.single(str(path), f"not a distill results.json (no {', '.join(missing)}): {fix}")
    if not isinstance(data["student"], str) or not isinstance(data["rows"], list):
        raise ConfigError.single(str(path), f"student must be a string and rows a list: {fix}")
    for i, r in enumerate(data["rows"]):
        problem = _row_problem(r)
        if problem:
            raise ConfigError.single(str(path), f"rows[{i}] {problem}: {fix}")
    if "config" in data and not isinstance(data["config"], dict):
        raise ConfigError.single(str(path), f"config must be a mapping of the study's settings: {fix}")
    return data


def recorded_settings(out: Path, data: dict, results: Path) -> tuple[DistillConfig, dict | None]:
    """The study's settings: those results.json records, else (a study made before it recorded them)
    those of the folder's config.yaml, with the old top-level ``lr`` translated
    (:func:`upgrade_settings`). Returns the config the report is written with, and what results.json
    recorded (None: nothing; the rewrite records nothing either)."""
    from .fileio import load_yaml

    recorded = data.get("config")
    source = results
    if recorded is None:
        source = out / "config.yaml"
        try:
            recorded = load_yaml(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError.single(
                str(results), f"records no settings and {source} is missing: rerun the study to rewrite both"
            ) from None
        except OSError as e:
            raise ConfigError.single(str(source), f"cannot be read ({e.strerror})") from None
        except (yaml.YAMLError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            raise ConfigError.single(str(source), f"not readable YAML ({e}): rerun the study") from None
        if not isinstance(recorded, dict):
            raise ConfigError.single(str(source), "is not a mapping of the study's settings: rerun the study")
    settings = upgrade_settings(recorded, to_dict(DistillConfig().optim))
    try:
        cfg = load_config(DistillConfig, data=settings | {"output_dir": str(out)})
    except ConfigError as e:
        raise ConfigError.single(
            str(source), f"the study's recorded settings do not load ({e}); rerun the study"
        ) from None
    return cfg, data.get("config")


def report_from_results(output_dir: str | Path) -> Path:
    """Rewrite a finished study's report.md, results.json/csv and figures from its ``results.json``
    alone (the rows and student recorded there, and the recorded settings): no model, task data or
    cells needed (``manyicl distill CONFIG --report``). Nothing is written unless results.json and the
    settings are usable; holds the folder's lock while it writes."""
    if not str(output_dir).strip():
        raise ConfigError.single(
            "output_dir", "is empty; give the study's folder, e.g. output_dir=results/distill"
        )
    out = Path(output_dir).expanduser()
    path = out / "results.json"
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ConfigError.single(
            "output_dir",
            f"{path} {what}: run the study first (without --report); --report only rewrites its report",
        )
    data = read_results(path)
    cfg, recorded = recorded_settings(out, data, path)
    check_output_dir(str(out))  # writable (a read-only folder is refused before anything is written)
    with exclusive_lock(out, "distill report"):
        return write_report(cfg, data["rows"], data["student"], recorded)
