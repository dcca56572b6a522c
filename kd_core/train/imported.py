"""Black-box teacher files kept as stored teacher runs, so they are measured, listed,
picked and compared like a teacher trained here.

Importing copies the file into the store's weights folder with a sidecar
(`<run>.<suffix>.json`: contract, class mapping, cross-dataset flag, digest), evaluates it
on the dataset's test split and times it. The same file and contract imported again for
the same dataset is the same run (by SHA-256), not a new one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from kd_core.config import DataConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.errors import ConfigError
from kd_core.store import Store
from kd_core.train.blackbox import BlackBoxTeacher, InputContract, load_blackbox, read_json
from kd_core.train.data import Dataset
from kd_core.train.recorder import Trained, record

SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".torchscript.pt"}


@dataclass(frozen=True)
class TeacherFile:
    """What the user says about a black-box teacher file."""

    path: Path
    contract: InputContract
    mapping: dict[str, str] | None = None
    cross: bool = False
    name: str = ""  # shown in labels (an upload's original file name)

    def sidecar(self, digest: str, kind: str) -> dict:
        return {
            "format": "kd-studio-blackbox/1",
            "kind": kind,
            "source": self.name or self.path.name,
            "sha256": digest,
            "contract": self.contract.to_dict(),
            "mapping": self.mapping or {},
            "cross": self.cross,
        }


def parse_mapping(mapping: object, where: str) -> dict[str, str] | None:
    """A class mapping {"teacher class": "dataset class", ...} as read from JSON."""
    if not mapping:
        return None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ConfigError(f"{where} must be a JSON object of teacher class name -> dataset class name.")
    return {str(k): v for k, v in mapping.items()}


def read_mapping(path: str | Path | None) -> dict[str, str] | None:
    return parse_mapping(read_json(path, "class-mapping file"), f"class-mapping file '{path}'") if path else None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load(tf: TeacherFile, data: Dataset) -> tuple[BlackBoxTeacher, list[str]]:
    return load_blackbox(
        tf.path, tf.contract, data.input_shape, data.classes, data.mean, data.std, tf.mapping, tf.cross
    )


def check_teacher_file(tf: TeacherFile, data: Dataset) -> BlackBoxTeacher:
    """The teacher `tf` describes, checked against `data`, without storing anything."""
    return _load(tf, data)[0]


def _existing(store: Store, data: Dataset, meta: dict) -> str | None:
    meta = json.loads(json.dumps(meta))  # as the sidecar reads back (tuples are lists)
    for run in store.list_runs(kind="teacher", dataset=data.name):
        side = Path(run.weights + ".json") if run.weights else None
        if run.status == "finished" and side and side.is_file() and json.loads(side.read_text()) == meta:
            return run.id
    return None


def import_teacher_file(store: Store, tf: TeacherFile, data: Dataset, threads: int = 0) -> tuple[str, list[str]]:
    """Check `tf` against `data` (refused before anything is stored), then keep it as a teacher
    run through the recorder like any other (`recorder.record`: test split, size, latency at the
    thread count a run trained with `threads` is timed at). Returns (run id, notes on adaptations)."""
    teacher, notes = _load(tf, data)
    meta = tf.sidecar(sha256(tf.path), teacher.kind)
    found = _existing(store, data, meta)
    if found:
        return found, notes
    cfg = RunConfig(
        kind="teacher",
        data=DataConfig(dataset=data.name),
        model=ModelSpec(family=teacher.kind),
        train=TrainConfig(threads=int(threads)),
    )
    run_id = store.create_run(cfg, label=f"{teacher.kind} {meta['source']} (black box)")

    def keep(run_id: str) -> Path:  # the file itself, with its sidecar: it is not a PyTorch checkpoint
        weights = store.weights_dir / f"{run_id}{SUFFIX[teacher.kind]}"
        shutil.copyfile(tf.path, weights)
        Path(f"{weights}.json").write_text(json.dumps(meta, indent=1))
        return weights

    numbers = {"uploaded": meta["source"], "blackbox": teacher.kind, "notes": notes}
    record(store, run_id, cfg, data, Trained("finished", model=teacher, numbers=numbers, save=keep))
    return run_id, notes
