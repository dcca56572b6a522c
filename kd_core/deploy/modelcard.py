"""Model cards: what a stored run is, how well it does, how fast, and how to make it again.

Why a card: a downloaded .onnx says nothing about the data split, the teacher,
the temperature or the seed that made it, nor about the machine its latency
was measured on. The card is built from the store alone (config, metrics,
per-epoch curves), so it is reproducible from what the store keeps, and it is
written three ways: JSON for tools, Markdown for people, and the training
curves as a self-contained plotly HTML file (no network needed to open it).

Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shlex
import statistics
import time
import zipfile
from pathlib import Path

from kd_core.config import DistillConfig, LabelConfig, RunConfig, format_methods, format_params
from kd_core.deploy.runtimes import latency_markdown, machine_info, machine_line, quantization_markdown
from kd_core.errors import KDError
from kd_core.records import StoredRun
from kd_core.store import Store, as_store
from kd_core.store.related import gain_over_baseline

SCHEMA = "kd-studio-model-card/1"
OFFICIAL_TEST_SPLITS = ("mnist", "fashion-mnist", "cifar10")
METRIC_KEYS = (
    "test_acc",
    "best_val_acc",
    "final_val_acc",
    "best_epoch",
    "epochs_done",
    "ece",
    "agreement",
    "params",
    "bytes",
    "flops",
    "seconds",
    "train_samples_per_s",
)


class CardError(KDError):
    """A model card cannot be made for this run."""


def _record(store: Store, run_id: str) -> StoredRun:
    record = store.get_run(run_id)
    if record is None:
        raise CardError(f"no stored run '{run_id}'.")
    return record


# ---------------------------------------------------------------- reproduce


def _flag(name: str, value) -> list[str]:
    return [name, repr(value) if isinstance(value, float) else str(value)]


def _switch(name: str, on: bool) -> list[str]:
    return [name] if on else []


def reproduce_command(config: dict, store_root: str | None = None) -> str | None:
    """The `python -m kd_core ...` line that trains this run again, every flag from the stored
    config; None for a student whose teacher the config does not name (no command can make it: a
    DML peer) or that several runs taught at once (a BAN generation taught by the ensemble).

    A baseline with a teacher is the second run that `distill --teacher … --baseline` makes
    (after a student of the same seed; the baseline's λ and T are unused). A baseline without
    one is trained by `teacher` with the same model and budget: labels only, the same training,
    stored as a teacher. Never a placeholder: every command printed here runs as it is."""
    data, model, train = config["data"], config["model"], config["train"]
    kind = config.get("kind", "teacher")
    teacher_id = config.get("teacher_id")
    if kind == "student" and not teacher_id:
        return None
    if len((config.get("pipeline") or {}).get("parents") or ()) > 1:  # a BAN ensemble's pupil: no one-run command
        return None
    args = ["python", "-m", "kd_core", "distill" if teacher_id and kind != "teacher" else "teacher"]
    args += _flag("--dataset", data["dataset"]) + _flag("--data-root", data["root"])
    args += _flag("--image-size", data["image_size"]) + _flag("--val-fraction", data["val_fraction"])
    args += _flag("--split-seed", data["split_seed"]) + _switch("--no-download", not data["download"])
    args += _flag("--storage", data["storage"]) if data.get("storage", "auto") != "auto" else []
    args += _flag("--cache-dir", data["cache_dir"]) if data.get("cache_dir") else []
    args += _flag("--store", store_root) if store_root else []
    args += _flag("--family", model["family"]) + _flag("--size", model["size"]) + _flag("--depth", model["depth"])
    args += _flag("--width", model["width"]) if model.get("width", 1.0) != 1.0 else []
    init = train.get("init_weights", "")  # configs stored before starting weights existed have none
    args += ["--pretrained"] if init == "torchvision" else _flag("--weights", init) if init else []
    for key in (
        "epochs",
        "batch_size",
        "lr",
        "optimizer",
        "momentum",
        "weight_decay",
        "seed",
        "device",
        "threads",
        "patience",
    ):
        args += _flag("--" + key.replace("_", "-"), train[key])
    args += _switch("--cosine", train["cosine"]) + _switch("--augment", train["augment"])
    args += _switch("--flip", train.get("flip", False))  # function matching's flips and mixup, stored
    args += _flag("--mixup", train["mixup"]) if train.get("mixup") else []  # as the flags that make them
    args += _flag("--precision", train["precision"]) if train.get("precision", "fp32") != "fp32" else []
    args += _label_flags(config.get("labels") or {})
    if args[3] == "distill":
        distill = config.get("distill") or {}
        args += _flag("--teacher", teacher_id)
        if distill:
            args += _flag("--temperature", distill["temperature"]) + _flag("--alpha", distill["alpha"])
            args += _switch("--no-cache", not distill["cache_teacher_logits"])
            methods = DistillConfig.from_dict(distill).methods
            if methods != DistillConfig().methods:
                args += _flag("--method", format_methods(methods))
                for pair in format_params(methods):
                    args += _flag("--method-param", pair)
        args += _switch("--baseline", kind == "baseline")
    return " ".join(shlex.quote(a) for a in args)


def _label_flags(labels: dict) -> list[str]:
    """The label budget and the transfer set, where they differ from the defaults: a run on 50
    labels must not come back as a run on all of them (configs from before budgets have none)."""
    c, d = LabelConfig(**labels), LabelConfig()
    args = _flag("--labels", c.labels) if c.labels else []
    args += _flag("--labels-per-class", c.per_class) if c.per_class else []
    args += _flag("--label-seed", c.label_seed) if c.label_seed != d.label_seed else []
    args += _flag("--transfer", c.transfer) if c.transfer != d.transfer else []
    return args + (_flag("--transfer-ratio", c.transfer_ratio) if c.transfer_ratio != d.transfer_ratio else [])


def run_command(store: Store | None, record: StoredRun) -> str | None:
    """The command that trains the stored run `record` again (`reproduce_command`), writing
    into `store` if given; None for an uploaded checkpoint (it was not trained here) or a
    student whose teacher is unknown.

    A sweep's no-KD baseline is stored without a teacher of its own: its command names the
    sweep's teacher, the one its students are compared against (`distill --baseline` trains
    the distilled student of the same seed first, then the baseline)."""
    if record.metrics.get("uploaded"):
        return None
    config = record.config.to_dict()
    if config.get("kind") == "baseline" and not config.get("teacher_id") and store is not None:
        sweep = store.get_sweep(config.get("sweep_id") or "")
        if sweep is not None:
            config["teacher_id"] = sweep["config"].get("teacher_id") or None
    return reproduce_command(config, str(store.root) if store is not None else None)


# ---------------------------------------------------------------- content


def config_key(config: RunConfig) -> str:
    """What makes two runs the same configuration: the config without the seeds (training and label
    draw) and the sweep."""
    c = config.to_dict()
    c["train"].pop("seed", None)
    c["labels"].pop("label_seed", None)  # a replicate on a label budget draws its own subset (as the Runs table)
    c.pop("sweep_id", None)
    return json.dumps(c, sort_keys=True)


def seed_runs(store: Store, record: StoredRun) -> dict:
    """Finished runs whose config differs from this one only by the training seed:
    {runs: [{run_id, seed, test_acc}], mean, std, n}."""
    key = config_key(record.config)
    same = [
        r
        for r in store.list_runs(kind=record.kind, dataset=record.dataset, status="finished")
        if config_key(r.config) == key and r.metrics.get("test_acc") is not None
    ]
    runs = sorted(
        ({"run_id": r.id, "seed": r.config.train.seed, "test_acc": r.metrics["test_acc"]} for r in same),
        key=lambda r: (r["seed"], r["run_id"]),
    )
    accs = [r["test_acc"] for r in runs]
    return {
        "runs": runs,
        "n": len(accs),
        "mean": statistics.fmean(accs) if accs else None,
        "std": statistics.stdev(accs) if len(accs) > 1 else None,
    }


def _dataset(config: RunConfig) -> dict:
    data = config.data
    test = (
        "the dataset's official test split"
        if data.dataset in OFFICIAL_TEST_SPLITS
        else f"a stratified 20% hold-out drawn with split seed {data.split_seed}"
    )
    return {
        "name": data.dataset,
        "val_fraction": data.val_fraction,
        "split_seed": data.split_seed,
        "validation": f"a stratified {data.val_fraction:.0%} of the training split (split seed {data.split_seed})",
        "test": test,
    }


def _labels(config: RunConfig, metrics: dict) -> dict:
    """The label budget and, from the engine's report, how many labelled and transfer images the
    run trained on (None where not reported: runs stored before budgets trained on every label)."""
    c = config.labels
    report = metrics.get("labels") or {}
    return {
        "budget": c.describe(),
        "label_seed": c.label_seed if c.budgeted else None,
        "transfer": c.transfer,
        "labelled": report.get("labelled"),
        "transfer_used": report.get("transfer_used"),
    }


def _labels_lines(lab: dict | None) -> list[str]:
    """The Dataset section's labels line; none for a card made before cards carried labels."""
    if lab is None:
        return []
    seed = f" (label seed {lab['label_seed']})" if lab["label_seed"] is not None else ""
    line = f"- labels: {lab['budget']}{seed}"
    if lab["labelled"] is not None:
        line += f": {lab['labelled']:,} labelled training images"
    if lab["transfer_used"]:
        line += f" and {lab['transfer_used']:,} transfer images whose labels the model never saw"
    return [line]


def _model_summary(record: StoredRun) -> dict:
    m = record.metrics
    return {
        "run_id": record.id,
        "kind": record.kind,
        "label": record.label,
        **dataclasses.asdict(record.config.model),
        **{k: m.get(k) for k in ("test_acc", "params", "bytes", "flops")},
    }


def _latency(record: StoredRun, latency: dict | None) -> dict:
    """A cross-runtime measurement if given; else the eager one stored at training time."""
    if latency is not None:
        return {
            "source": "measured for this card",
            "machine": latency.get("machine"),
            "threads": latency.get("threads"),
            "rows": latency.get("rows", []),
        }
    rows = [{"model": record.kind, "runtime": "eager", **row.to_dict()} for row in record.latencies()]
    threads = (record.metrics.get("latency") or {}).get("threads")
    return {
        "source": "measured at the end of training (eager PyTorch); machine facts below are of the "
        "machine that made this card",
        "machine": machine_info(threads),
        "threads": threads,
        "rows": rows,
    }


def _baseline(store: Store, record: StoredRun) -> dict | None:
    """A student's no-KD baseline and what distillation bought over it, with its noise."""
    gain = gain_over_baseline(store, record) if record.kind == "student" else None
    if gain is None:
        return None
    base, diff = gain
    return {
        **_model_summary(base),
        "gain": diff.diff,
        "gain_images": diff.images,
        "test_images": diff.n_test,
        "seeds": diff.seeds,
        "noise_95": diff.noise,
        "within_noise": diff.within_noise,
        "basis": diff.basis,
        "text": diff.text(),
    }


def model_card(
    store: Store | str | Path, run_id: str, latency: dict | None = None, quantization: dict | None = None
) -> dict:
    """The card as a JSON-able dict. `latency` is a `runtimes.bench_run` result and
    `quantization` a `runtimes.quantization_report` result; both optional."""
    store = as_store(store)
    record = _record(store, run_id)
    config = record.config
    teacher_ref = record.teacher_id
    teacher_record = store.get_run(teacher_ref) if teacher_ref else None  # None too if it was deleted
    teacher = _model_summary(teacher_record) if teacher_record else None
    metrics = record.metrics
    return {
        "schema": SCHEMA,
        "run_id": run_id,
        "kind": record.kind,
        "label": record.label,
        "status": record.status,
        "created": record.created,
        "finished": record.finished,
        "card_made": time.time(),
        "dataset": _dataset(config),
        "labels": _labels(config, metrics),
        "teacher": teacher or ({"reference": teacher_ref} if teacher_ref else None),
        "model": _model_summary(record),
        "hyperparameters": config.to_dict(),
        "distillation": _distillation(config, metrics),
        "metrics": {
            **{k: metrics.get(k) for k in METRIC_KEYS if k in metrics},
            "per_class_accuracy": metrics.get("per_class_accuracy"),
            "confusion_matrix": metrics.get("confusion_matrix"),
            "seed": config.train.seed,
            "split_seed": config.data.split_seed,
        },
        "seeds": seed_runs(store, record),
        "baseline": _baseline(store, record),
        "latency": _latency(record, latency),
        "quantization": quantization,
        "reproduce": run_command(store, record),
        "curves": store.epochs(run_id),
    }


def _distillation(config: RunConfig, metrics: dict) -> dict | None:
    """How a student was distilled: its methods as --method writes them, T, λ, the loss they
    make, and the final epoch's named terms; None for a run without a teacher's loss."""
    d = config.distill
    if d is None:
        return None
    return {
        "methods": format_methods(d.methods),
        "method_params": format_params(d.methods),
        "temperature": d.temperature,
        "lambda": d.alpha,
        "loss": "(1 − λ)·CE + λ·Σ_m w_m·Σ terms_m",
        "final_terms": metrics.get("loss_terms"),
    }


# ---------------------------------------------------------------- rendering


def _num(v) -> str:
    if isinstance(v, float):  # 4 significant digits: accuracies and learning rates alike
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "" if v is None else str(v)


def _kv_table(pairs) -> list[str]:
    return ["| | |", "|---|---|"] + [f"| {k} | {_num(v)} |" for k, v in pairs]


def _flat(prefix: str, d: dict) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for k, v in d.items():
        if prefix == "distill." and k == "methods":  # the mix as --method writes it, not a list of dicts
            specs = DistillConfig.from_dict({"methods": v}).methods
            v = " ".join([format_methods(specs), *format_params(specs)])
        out += _flat(f"{prefix}{k}.", v) if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


def card_markdown(card: dict) -> str:
    """The card for people. Every number comes from `card`, so the JSON and the Markdown agree."""
    t, s, d, m = card.get("teacher"), card["model"], card["dataset"], card["metrics"]
    lines = [
        f"# Model card: {card['label']} ({card['kind']}, run `{card['run_id']}`)",
        "",
        f"Status **{card['status']}**. Test accuracy **{_num(m.get('test_acc'))}**.",
        "",
        "## Dataset",
        "",
        f"- dataset: `{d['name']}`",
        f"- validation: {d['validation']}",
        f"- test: {d['test']}",
        *_labels_lines(card.get("labels")),
        "",
        "## Models",
        "",
    ]
    if t and "run_id" in t:
        lines.append(
            f"- teacher: {t['label']} (run `{t['run_id']}`), {_num(t['params'])} params, "
            f"test accuracy {_num(t['test_acc'])}"
        )
    elif t:
        lines.append(f"- teacher: `{t['reference']}` (not in this store)")
    lines.append(
        f"- this model: {s['label']}, {_num(s['params'])} params, {_num(s['bytes'])} bytes, "
        f"{_num(s['flops'])} FLOPs/sample"
    )
    if b := card.get("baseline"):
        lines.append(
            f"- no-KD baseline: {b['label']} (run `{b['run_id']}`), the same model and budget without the "
            f"teacher, test accuracy {_num(b['test_acc'])}; distillation's gain: {b['text']} ({b['basis']})"
        )
    elif card["kind"] == "student":
        lines.append("- no-KD baseline: none trained, so what distillation bought is not known")
    if dist := card.get("distillation"):
        params = f" ({', '.join(dist['method_params'])})" if dist["method_params"] else ""
        terms = ", ".join(f"{k} {_num(v)}" for k, v in (dist["final_terms"] or {}).items())
        lines.append(
            f"- distillation: `{dist['methods']}`{params}, T = {_num(dist['temperature'])}, "
            f"λ = {_num(dist['lambda'])}; loss {dist['loss']}" + (f"; last epoch's terms: {terms}" if terms else "")
        )
    lines += [
        "",
        "## Hyperparameters",
        "",
    ]
    lines += [*_kv_table(_flat("", card["hyperparameters"])), "", "## Metrics", ""]
    lines += _kv_table([(k, v) for k, v in m.items() if k not in ("per_class_accuracy", "confusion_matrix")])
    seeds = card["seeds"]
    lines += ["", "## Seeds", "", f"{seeds['n']} finished run(s) with this configuration but for the seed:"]
    lines += [f"- seed {r['seed']}: test accuracy {r['test_acc']:.4f} (run `{r['run_id']}`)" for r in seeds["runs"]]
    if seeds["std"] is not None:
        lines.append(f"- mean {seeds['mean']:.4f} ± {seeds['std']:.4f} (sample std)")
    lat = card["latency"]
    lines += ["", "## Latency", "", f"Source: {lat['source']}.", "", machine_line(lat.get("machine")), ""]
    lines += [latency_markdown(lat["rows"])] if lat["rows"] else ["not measured"]
    if card.get("quantization"):
        lines += ["", "## int8 quantization", "", *quantization_markdown(card["quantization"])]
    lines += ["", "## Reproduce", ""]
    lines += (
        ["```sh", card["reproduce"], "```"]
        if card["reproduce"]
        else ["Not reproducible from this store: the run was uploaded, or its teacher is unknown."]
    )
    lines += ["", "Training curves: `curves.html` beside this card.", ""]
    return "\n".join(lines)


def curves_html(store: Store | str | Path, run_id: str, include_plotlyjs: bool | str = True) -> str:
    """Loss terms and accuracies per epoch from the store, as one plotly HTML page
    (plotly.js inlined by default, so it opens offline)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    store = as_store(store)
    record = _record(store, run_id)
    epochs = store.epochs(run_id)
    if not epochs:
        raise CardError(f"run '{run_id}' has no per-epoch metrics to plot.")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss per epoch", "accuracy per epoch"))
    x = [e["epoch"] for e in epochs]
    terms = list(dict.fromkeys(k for e in epochs for k in e["terms"]))
    for col, keys in ((1, ("loss", *terms)), (2, ("train_acc", "val_acc"))):
        for key in keys:
            ys = [e[key] if key in e else e["terms"].get(key) for e in epochs]
            if any(v is not None for v in ys):
                fig.add_trace(go.Scatter(x=x, y=ys, mode="lines+markers", name=key), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=f"{record.label} ({record.kind}, run {run_id})", template="plotly_white")
    return fig.to_html(full_html=True, include_plotlyjs=include_plotlyjs)


def card_files(
    store: Store | str | Path, run_id: str, latency: dict | None = None, quantization: dict | None = None
) -> dict[str, bytes]:
    """{"MODEL_CARD.md", "model_card.json", "curves.html"} → bytes, for download buttons."""
    card = model_card(store, run_id, latency, quantization)
    files = {
        "MODEL_CARD.md": card_markdown(card).encode(),
        "model_card.json": json.dumps(card, indent=2, default=str).encode(),
    }
    if card["curves"]:
        files["curves.html"] = curves_html(store, run_id).encode()
    return files


def card_zip(
    store: Store | str | Path, run_id: str, latency: dict | None = None, quantization: dict | None = None
) -> bytes:
    """The card's files in one zip, for a single download button."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in card_files(store, run_id, latency, quantization).items():
            z.writestr(f"{run_id}/{name}", data)
    return buf.getvalue()
