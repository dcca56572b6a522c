"""`kd-studio compress`: search for the smallest fast student that keeps the teacher's accuracy.

    kd-studio compress --teacher RUN_ID --runtime onnxruntime --batch 1 --max-drop 1.0 \\
        --min-speedup 10 --trials 40 [--minutes M] [--backend ray] [--json]
    kd-studio compress --resume STUDY_ID [--trials N] [--minutes M]
    kd-studio compress --list

An Optuna study (kd_core.compress): each candidate is timed under the target runtime before it
trains, and dropped at no training cost if it cannot meet the latency or size budget. The study
id goes to stderr first, so a stopped study can be resumed; a resume repeats no finished trial.
Exit 0 when a student meets the goal, 1 when none did (the reason is printed), 2 on bad input.
"""

from __future__ import annotations

import json
import sys
import time

from kd_core.cli.common import ProgressBar, add_data_args, add_train_args, data_config, numbers, plain, train_config
from kd_core.compress.config import MODES, PRUNERS, SAMPLERS, CompressConfig, Goal
from kd_core.compress.search import run_study
from kd_core.compress.space import PRECISIONS, SearchSpace, method_axes
from kd_core.compress.study import counted, create_study, load_config, read_study
from kd_core.deploy.runtimes import RUNTIMES, machine_line
from kd_core.errors import ConfigError
from kd_core.store import Store
from kd_core.train.data import load_dataset

EXIT_NO_STUDENT = 1
DEFAULT_TRIALS = 20


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def register(sub) -> None:
    """Add the `compress` sub-command to the CLI's sub-parsers."""
    p = sub.add_parser("compress", help="search for the smallest fast student within an accuracy drop")
    add_data_args(p)
    add_train_args(p, epochs=5)
    p.set_defaults(lr=3e-3)
    g = p.add_argument_group("target and goal")
    g.add_argument("--teacher", help="teacher run id or checkpoint path (not needed with --resume)")
    g.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime", help="where the student will run")
    g.add_argument("--batch", type=int, default=1, help="batch size the latency is timed at")
    g.add_argument("--latency-threads", type=int, default=1, help="threads latency is timed at")
    g.add_argument("--max-drop", type=float, default=1.0, help="accuracy points below the teacher allowed")
    g.add_argument("--max-latency-ms", type=float, default=None, help="latency budget in ms")
    g.add_argument("--min-speedup", type=float, default=None, help="at least this many × faster than the teacher")
    g.add_argument("--max-size-mb", type=float, default=None, help="size budget of the deployed file in MB")
    g.add_argument("--mode", choices=MODES, default="constrained", help="constrained: best accuracy within the goal")
    s = p.add_argument_group("search")
    s.add_argument("--trials", type=int, default=None, help="trials in the study, pruned ones included (default 20)")
    s.add_argument("--minutes", type=float, default=None, help="wall-clock budget of this start")
    s.add_argument("--sampler", choices=SAMPLERS, default="tpe")
    s.add_argument("--pruner", choices=PRUNERS, default="median")
    s.add_argument("--study-seed", type=int, default=0, help="seed of Optuna's sampler")
    s.add_argument("--families", type=_names, default=("mlp",), help="student families, e.g. mlp,cnn")
    s.add_argument("--widths", type=numbers(int), default=(8, 512), help="MLP width range low,high")
    s.add_argument("--depths", type=numbers(int), default=(1, 2), help="MLP depth range low,high")
    s.add_argument("--cnn-widths", type=numbers(int), default=(4, 32), help="CNN width range low,high")
    s.add_argument("--temperatures", type=numbers(float), default=(1.0, 8.0), help="T range low,high")
    s.add_argument("--alphas", "--lambdas", type=numbers(float), default=(0.1, 0.95), help="λ range low,high")
    s.add_argument("--precisions", type=_names, default=PRECISIONS, help="float32,int8")
    s.add_argument(
        "--methods",
        type=_names,
        default=(),
        help="distillation methods to search over, e.g. kd,dkd,dist (each with its main weight); default: KD only",
    )
    s.add_argument("--resume", metavar="STUDY_ID", help="continue this study")
    s.add_argument("--list", action="store_true", help="list the stored studies")
    s.add_argument("--backend", choices=["inprocess", "ray"], default="inprocess")
    s.add_argument("--ray-address", default=None, help="Ray cluster to use (default: start a local one)")
    s.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray instance (trials at once)")
    p.set_defaults(fn=cmd_compress)


def compress_config(a) -> CompressConfig:
    if not a.teacher:
        raise ConfigError("a new study needs --teacher (a run id or checkpoint path); --resume STUDY_ID continues one.")
    return CompressConfig(
        teacher_id=str(a.teacher),
        data=data_config(a),
        train=train_config(a),
        runtime=a.runtime,
        batch_size=a.batch,
        threads=a.latency_threads,
        goal=Goal(a.max_drop, a.max_latency_ms, a.min_speedup, a.max_size_mb),
        mode=a.mode,
        space=SearchSpace(
            families=a.families,
            mlp_widths=a.widths,
            mlp_depths=a.depths,
            cnn_widths=a.cnn_widths,
            temperatures=a.temperatures,
            alphas=a.alphas,
            precisions=a.precisions,
            methods=method_axes(a.methods),
        ),
        sampler=a.sampler,
        pruner=a.pruner,
        trials=a.trials or DEFAULT_TRIALS,
        minutes=a.minutes,
        seed=a.study_seed,
    )


def list_studies(store: Store, as_json: bool) -> int:
    out = []
    for row in store.list_studies():
        cfg = CompressConfig.from_dict(row["config"])
        study = read_study(store, row["id"])
        out.append(
            {
                "id": row["id"],
                "teacher": cfg.teacher_id,
                "goal": cfg.goal.text(),
                "done": counted(study),
                "trials": cfg.trials,
            }
        )
    if as_json:
        print(json.dumps(out, indent=2))
    for s in [] if as_json else out:
        print(f"{s['id']}  {s['done']} trials done (budget {s['trials']})  teacher {s['teacher']}  goal: {s['goal']}")
    return 0


def _print_trials(rows: list[dict]) -> None:
    for r in rows:
        acc = "" if r["val_acc"] != r["val_acc"] else f"val {r['val_acc']:.4f} ({r['drop_points']:+.2f} pts)"
        print(
            f"trial {r['number']:3d} {r['state']:11s} {r['label'] or '':45s} {r['latency_ms']:.4f} ms "
            f"{r['size_mb']:.3f} MB {acc}{'  feasible' if r.get('feasible') else ''}"
            + (f"  ({r['why']})" if r.get("why") else "")
        )


def cmd_compress(a) -> int:
    started = time.perf_counter()
    store = Store(a.store)
    if a.list:
        return list_studies(store, a.json)
    study_id = a.resume or create_study(store, compress_config(a))
    cfg = load_config(store, study_id)
    print(f"compress study {study_id}: resume with --resume {study_id}", file=sys.stderr)
    data = load_dataset(cfg.data)
    bar = ProgressBar(not a.quiet)
    report = run_study(
        store,
        study_id,
        data,
        emit=bar,
        backend=a.backend,
        ray_address=a.ray_address,
        ray_cpus=a.ray_cpus,
        trials=a.trials if a.resume else None,
        minutes=a.minutes if a.resume else None,
    )
    bar.close()
    machine = machine_line(report.reference.get("machine"))
    payload = {
        "command": "compress",
        "study_id": study_id,
        "config": cfg.to_dict(),
        "reference": report.reference,
        "machine": machine,
        "verdict": report.verdict,
        "chosen": report.chosen,
        "stopped": report.stopped,
        "trials": report.rows,
        "runs": [o.summary() for o in report.outcomes],
        "seconds": time.perf_counter() - started,
    }
    if a.json:
        print(json.dumps(plain(payload), indent=2, default=str))
    else:
        print(machine)
        _print_trials(report.rows)
        if report.chosen is not None or report.stopped:
            print(report.verdict)
    if report.chosen is None and not report.stopped:
        print(f"error: {report.verdict}", file=sys.stderr)
        return EXIT_NO_STUDENT
    return 0
