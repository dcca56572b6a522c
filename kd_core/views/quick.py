"""Quick start: one button that shows *when* distillation helps, with the statistics.

It trains (or reuses) the default teacher on every label, then distils the small default
student in two regimes, each over QUICK_SEEDS seeds with a no-KD baseline per seed:

* **few labels**: QUICK_LABELS per class, the rest of the training split an unlabelled
  transfer set (Hinton et al. 2015, §3): distillation wins by a wide margin;
* **all labels**: the same student on every label, where the teacher has little to add.

`quick_summary` reads the runs back from the store and states each regime's gain, its
seeds and its paired t-test in plain words. Defaults and the evidence behind them:
benchmarks/RESULTS_transfer.md.
"""

from __future__ import annotations

from dataclasses import replace

from kd_core.config import LabelConfig, RunConfig
from kd_core.jobs import Job, JobManager, JobSnapshot
from kd_core.stats import paired_test, summarize
from kd_core.store import Store
from kd_core.train import recorder
from kd_core.train.data import Dataset
from kd_core.views.studio import DEFAULT_LAMBDA, make_config, matching_teacher, presets

QUICK_LABELS = 5  # labels per class in the few-labels regime (50 on digits)
QUICK_SEEDS = 5
QUICK_EPOCHS = 10
QUICK_T, QUICK_LAMBDA = 4.0, DEFAULT_LAMBDA  # every T × λ gained alike at 5 labels a class (RESULTS_transfer.md)
REGIMES = ("few", "all")


def quick_configs(dataset: str, device: str = "auto", threads: int = 0) -> tuple[RunConfig, RunConfig]:
    """Quick start's teacher and student (teacher_id, seed and labels still unset) for `dataset`."""

    def preset(kind: str, lr: float) -> RunConfig:
        spec = presets(dataset)[kind]
        return make_config(
            kind,
            dataset,
            "data",
            32,
            spec.family,
            spec.size,
            spec.depth,
            QUICK_EPOCHS,
            lr,
            64,
            device=device,
            threads=threads,
            temperature=QUICK_T,
            alpha=QUICK_LAMBDA,
        )

    return preset("teacher", 1e-3), preset("student", 3e-3)


def regime_labels(regime: str, seed: int) -> LabelConfig:
    """Each seed draws its own labelled subset, so the spread over seeds includes which
    images happened to get labels, not only the training noise."""
    return LabelConfig(per_class=QUICK_LABELS, label_seed=seed) if regime == "few" else LabelConfig()


def regime_of(cfg: RunConfig) -> str:
    return "few" if cfg.labels.budgeted else "all"


def first_free_seed(store: Store, student: RunConfig) -> int:
    """One past the highest seed an earlier Quick start student used with this teacher:
    a second Quick start replicates with new seeds instead of repeating the first."""
    seeds = [
        r.config.train.seed
        for r in store.list_runs(kind="student", dataset=student.data.dataset)
        if r.teacher_id == student.teacher_id and r.status != "failed"
    ]
    return max(seeds) + 1 if seeds else 0


def start_quick(
    manager: JobManager,
    store: Store,
    data: Dataset,
    device: str = "auto",
    threads: int = 0,
    seeds: int = QUICK_SEEDS,
) -> Job:
    """The default teacher (reused when one was trained exactly so before), then for each
    regime and seed a distilled student and its baseline. Notes: teacher_id, teacher_reused,
    seeds (the student seeds of this job)."""
    t_cfg, s_base = quick_configs(data.name, device, threads)

    def work(emit, stop, job):
        outcomes = []
        teacher_id = matching_teacher(store, t_cfg)
        if teacher_id is not None:
            job.note(teacher_id=teacher_id, teacher_reused=True)
            teacher_model = recorder.load_teacher(store, teacher_id, data)
        else:
            teacher = recorder.train_teacher(store, t_cfg, data, emit, stop)
            job.add_outcome(teacher)
            job.note(teacher_id=teacher.run_id, teacher_reused=False)
            outcomes.append(teacher)
            if teacher.status != "finished" or teacher.model is None or stop.is_set():
                return outcomes
            teacher_id, teacher_model = teacher.run_id, teacher.model
        student = replace(s_base, teacher_id=teacher_id)
        first = first_free_seed(store, student)
        job.note(seeds=list(range(first, first + seeds)))
        for regime in REGIMES:
            for seed in range(first, first + seeds):
                cfg = replace(student, labels=regime_labels(regime, seed), train=replace(student.train, seed=seed))
                for o in recorder.distill(store, cfg, data, teacher_model, True, emit, stop):
                    job.add_outcome(o)
                    job.set_label(o.run_id, f"{o.kind} · {'few' if regime == 'few' else 'all'} labels · seed {seed}")
                    outcomes.append(o)
                if stop.is_set() or outcomes[-1].status == "failed":
                    return outcomes
        return outcomes

    return manager.start(f"quick start: when distillation helps, on {data.name}", "quick", work)


# ---------------------------------------------------------------- the result in words


def quick_pairs(store: Store, run_ids: list[str]) -> dict[str, dict[str, dict[int, float]]]:
    """{regime: {"student" | "baseline": {seed: test accuracy}}} of the finished runs among `run_ids`."""
    out: dict[str, dict[str, dict[int, float]]] = {r: {"student": {}, "baseline": {}} for r in REGIMES}
    for run_id in run_ids:
        r = store.get_run(run_id)
        if r is None or r.status != "finished" or r.kind not in ("student", "baseline"):
            continue
        acc = r.metrics.get("test_acc")
        if acc is not None:
            out[regime_of(r.config)][r.kind][r.config.train.seed] = float(acc)
    return out


def regime_summary(pairs: dict[str, dict[int, float]], labels: dict | None) -> dict:
    seeds = sorted(pairs["student"].keys() & pairs["baseline"].keys())
    s = [pairs["student"][k] for k in seeds]
    b = [pairs["baseline"][k] for k in seeds]
    return {
        "seeds": seeds,
        "student": summarize(s),
        "baseline": summarize(b),
        "test": paired_test(s, b),
        "labelled": labels.get("labelled") if labels else None,
        "transfer": labels.get("transfer") if labels else None,
    }


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def points(d: float) -> str:
    return f"{100 * d:+.1f} points"


def p_text(p: float) -> str:
    if p != p:  # NaN: no test
        return "no p-value"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def few_statement(r: dict) -> str:
    t = r["test"]
    verdict = (
        "a gain this large would be very unlikely if distillation did nothing"
        if t.significant
        else "not significant at 0.05: more seeds would tell"
    )
    return (
        f"With only {r['labelled']:,} labelled images and the other {r['transfer']:,} training images as an "
        f"unlabelled transfer set, the distilled student scored **{pct(r['student'].mean)}** on the test set "
        f"against **{pct(r['baseline'].mean)}** for the same student trained on the labelled images alone: "
        f"**{points(t.mean_diff)}**, averaged over {t.n} seeds (paired t-test over the seeds, "
        f"**{p_text(t.p)}**; {verdict})."
    )


def all_statement(r: dict) -> str:
    t = r["test"]
    if t.significant and t.mean_diff > 0:
        tail = f"still a gain, but a smaller one ({points(t.mean_diff)}, {p_text(t.p)}, {t.n} seeds)"
    elif t.significant:
        tail = f"distillation did worse ({points(t.mean_diff)}, {p_text(t.p)}, {t.n} seeds)"
    else:
        tail = f"the gain is gone ({points(t.mean_diff)}, {p_text(t.p)}, not significant over {t.n} seeds)"
    return (
        f"With all {r['labelled']:,} labels, distilled **{pct(r['student'].mean)}** against "
        f"**{pct(r['baseline'].mean)}** without the teacher: {tail}."
    )


def quick_summary(store: Store, snapshot: JobSnapshot) -> dict | None:
    """Each regime's seeds, means, paired test and statement, from the store's copies of the
    job's runs; None until both regimes have at least one pair."""
    ids = [o["run_id"] for o in snapshot.outcomes]
    pairs = quick_pairs(store, ids)
    labels: dict[str, dict | None] = {}
    for run_id in ids:
        r = store.get_run(run_id)
        if r and r.kind == "student" and r.status == "finished":
            labels.setdefault(regime_of(r.config), r.metrics.get("labels"))
    out = {regime: regime_summary(pairs[regime], labels.get(regime)) for regime in REGIMES}
    if not all(out[r]["seeds"] for r in REGIMES):
        return None
    out["few"]["statement"] = few_statement(out["few"])
    out["all"]["statement"] = all_statement(out["all"])
    return out
