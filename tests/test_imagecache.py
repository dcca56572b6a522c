"""Memory-mapped image folders: the same batches, splits and training as in RAM; one decode
reused across loads; a folder that changes is decoded again; peak memory kept with a run."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import make_config, run_cli
from kd_core.config import DataConfig, LabelConfig, ModelSpec
from kd_core.errors import ConfigError, DataError
from kd_core.store import Store
from kd_core.train import data as data_module
from kd_core.train.data import load_dataset
from kd_core.train.engine import fit
from kd_core.train.imagecache import MappedImages
from kd_core.train.labels import training_set
from kd_core.train.memory import PeakRSS
from kd_core.train.metrics import predict_logits
from kd_core.train.recorder import train_teacher

CLASSES = ("ant", "bee", "cow")


def write_noise_folder(root, per_class: int = 20, seed: int = 0):
    """RGB PNGs of random pixels and assorted sizes, so resizing and every channel matter."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = 10 + (i % 5), 12 + (i % 3)
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            pixels[..., k] //= 2  # a class signal: one channel darker
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def configs(tmp_path, folder, **kw):
    base = dict(dataset=f"folder:{folder}", image_size=12, root=str(tmp_path / "data"), **kw)
    return DataConfig(storage="memory", **base), DataConfig(storage="memmap", **base)


def loads(cfg):
    records = []
    return load_dataset(cfg, emit=records.append), [r for r in records if r.event == "cache"]


def test_a_memory_mapped_folder_gives_the_same_splits_and_batches_as_in_ram(tmp_path):
    folder = write_noise_folder(tmp_path / "imgs")
    ram, mapped = (load_dataset(c) for c in configs(tmp_path, folder))
    assert isinstance(mapped.train_x, MappedImages) and isinstance(ram.train_x, torch.Tensor)
    assert (mapped.classes, mapped.input_shape) == (list(CLASSES), (3, 12, 12))
    assert (mapped.mean, mapped.std) == (ram.mean, ram.std)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(mapped, f"{split}_y"), getattr(ram, f"{split}_y"))
        assert getattr(mapped, f"{split}_x").shape == getattr(ram, f"{split}_x").shape
    idx = torch.tensor([7, 0, 31, 2, 2, 19])  # unsorted, with a repeat, as a shuffled epoch draws
    assert torch.equal(mapped.train_x.index_select(0, idx), ram.train_x.index_select(0, idx))
    assert torch.equal(mapped.test_x[3:11], ram.test_x[3:11]) and torch.equal(mapped.val_x[1], ram.val_x[1])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 12 * 12, 3))
    assert torch.equal(predict_logits(model, mapped.test_x, batch_size=5), predict_logits(model, ram.test_x))


def test_training_and_distilling_from_the_cache_match_the_in_ram_run_step_for_step(tmp_path):
    folder = write_noise_folder(tmp_path / "imgs")
    ram, mapped = (load_dataset(c) for c in configs(tmp_path, folder))
    cfg = make_config("teacher", ModelSpec("cnn", 4), epochs=2, batch_size=16)
    teacher_ram, teacher_mapped = fit(cfg, ram), fit(cfg, mapped)
    assert [h["loss"] for h in teacher_ram.history] == [h["loss"] for h in teacher_mapped.history]
    student_cfg = make_config("student", ModelSpec("mlp", 8, 1), epochs=2, batch_size=16)  # teacher logits cached
    a, b = fit(student_cfg, ram, teacher_ram.model), fit(student_cfg, mapped, teacher_mapped.model)
    assert [(h["loss"], h["terms"]) for h in a.history] == [(h["loss"], h["terms"]) for h in b.history]


def test_a_label_budget_keeps_the_training_set_mapped_and_distils_as_in_ram(tmp_path):
    """With 4 labels per class and the rest as transfer set, the run's rows are another mapped
    view (no pixels read into RAM), hold the same pixels in the same order, and a distilled
    student takes the same steps as from the in-RAM split."""
    folder = write_noise_folder(tmp_path / "imgs")
    ram, mapped = (load_dataset(c) for c in configs(tmp_path, folder))
    labels = LabelConfig(per_class=4, label_seed=1)
    a, b = training_set(ram, labels), training_set(mapped, labels)
    assert isinstance(b.inputs, MappedImages) and isinstance(b.x, MappedImages) and b.n_transfer == a.n_transfer
    assert torch.equal(b.inputs[:], a.inputs) and torch.equal(b.transfer_x[:], a.transfer_x)
    teacher = fit(make_config("teacher", ModelSpec("cnn", 4), epochs=1, batch_size=16), ram).model
    cfg = replace(make_config("student", ModelSpec("mlp", 8, 1), epochs=2, batch_size=8), labels=labels)
    ra, rb = fit(cfg, ram, teacher), fit(cfg, mapped, teacher)
    assert [(h["loss"], h["terms"]) for h in ra.history] == [(h["loss"], h["terms"]) for h in rb.history]
    assert ra.labels == rb.labels and ra.labels["transfer_used"] > 0


def test_the_cache_is_decoded_once_then_reused_and_rebuilt_when_the_folder_changes(tmp_path):
    folder = write_noise_folder(tmp_path / "imgs")
    cfg = configs(tmp_path, folder)[1]
    first, decoded = loads(cfg)
    assert decoded[-1].step == decoded[-1].total_steps == 60 and "decoding 60 images of imgs" in decoded[-1].message
    again, decoded = loads(cfg)
    assert decoded == [] and torch.equal(again.test_x[:], first.test_x[:])  # reused, not decoded again
    (slot,) = (tmp_path / "data" / "cache").iterdir()

    image = folder / "bee" / "3.png"  # the same file name and size, other pixels
    Image.fromarray(np.full((11, 12, 3), 200, dtype=np.uint8)).save(image)
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    changed, decoded = loads(cfg)
    assert len(decoded) and decoded[-1].total_steps == 60
    assert [p.name for p in (tmp_path / "data" / "cache").iterdir()] == [slot.name]  # one slot, no .part left
    ram = load_dataset(configs(tmp_path, folder)[0])
    assert torch.equal(changed.train_x[:], ram.train_x[:])  # the new pixels are what is read

    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(folder / "cow" / "new.png")
    grown, decoded = loads(cfg)
    assert decoded[-1].total_steps == 61 and len(grown.train_y) + len(grown.val_y) + len(grown.test_y) == 61


def test_a_reused_cache_keeps_its_training_statistics_until_the_folder_changes(tmp_path):
    """The normalisation of a reused cache is read from its slot (not the whole training split
    again), equal to the in-RAM path's to the last bit; a changed folder is a new cache whose
    statistics are computed afresh."""
    folder = write_noise_folder(tmp_path / "imgs")
    ram_cfg, cfg = configs(tmp_path, folder)
    ram, first = load_dataset(ram_cfg), load_dataset(cfg)
    (slot,) = (tmp_path / "data" / "cache").iterdir()
    (stored,) = json.loads((slot / "stats.json").read_text()).values()
    assert stored == [ram.mean, ram.std] == [first.mean, first.std]
    key = next(iter(json.loads((slot / "stats.json").read_text())))
    (slot / "stats.json").write_text(json.dumps({key: [0.25, 0.5]}))  # a sentinel only a read would return
    assert (load_dataset(cfg).mean, load_dataset(cfg).std) == (0.25, 0.5)
    other = replace(cfg, split_seed=cfg.split_seed + 1)  # other training rows: their own entry
    assert load_dataset(other).mean not in (0.25, ram.mean)
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(folder / "cow" / "new.png")
    grown_ram, grown = load_dataset(ram_cfg), load_dataset(cfg)
    assert (grown.mean, grown.std) == (grown_ram.mean, grown_ram.std) and grown.mean != 0.25


def test_another_image_size_is_another_cache(tmp_path):
    folder = write_noise_folder(tmp_path / "imgs", per_class=6)
    cfg = configs(tmp_path, folder)[1]
    small, big = load_dataset(cfg), load_dataset(DataConfig(**{**cfg.__dict__, "image_size": 20}))
    assert (small.input_shape, big.input_shape) == ((3, 12, 12), (3, 20, 20))
    assert len(list((tmp_path / "data" / "cache").iterdir())) == 2


def test_auto_storage_maps_only_what_would_not_fit(tmp_path, monkeypatch):
    folder = write_noise_folder(tmp_path / "imgs", per_class=6)
    auto = DataConfig(f"folder:{folder}", image_size=12, root=str(tmp_path / "data"))
    assert isinstance(load_dataset(auto).train_x, torch.Tensor)  # 18 images: in RAM
    monkeypatch.setattr(data_module, "AUTO_MEMMAP_BYTES", 18 * 3 * 12 * 12 * 4 - 1)  # one byte under their size
    assert isinstance(load_dataset(auto).train_x, MappedImages)
    with pytest.raises(ConfigError, match="unknown storage 'disk'"):
        load_dataset(DataConfig(f"folder:{folder}", storage="disk"))


def test_cifar10_offline_names_the_files_and_the_folder(tmp_path):
    for storage in ("memory", "memmap"):
        with pytest.raises(DataError) as err:
            load_dataset(DataConfig("cifar10", root=str(tmp_path), download=False, storage=storage))
        assert "data_batch_1..5" in str(err.value) and str(tmp_path / "cifar-10-batches-py") in str(err.value)


# ---------------------------------------------------------------- memory and the store


def test_peak_rss_sees_an_allocation_and_is_reset_between_blocks():
    with PeakRSS() as big:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
        del block
    with PeakRSS() as small:
        pass
    if big.scope == "process":
        pytest.skip("this system cannot reset the resident-memory high-water mark")
    assert big.bytes - small.bytes > 150 * 2**20


def test_a_run_on_a_mapped_folder_stores_its_peak_memory_and_normalisation(tmp_path):
    folder = write_noise_folder(tmp_path / "imgs", per_class=8)
    mapped = load_dataset(configs(tmp_path, folder)[1])
    outcome = train_teacher(Store(tmp_path / "runs"), make_config("teacher", ModelSpec("mlp", 8, 1), epochs=1), mapped)
    m = Store(tmp_path / "runs").get_run(outcome.run_id).metrics
    assert m["peak_rss_bytes"] > 50 * 2**20 and m["peak_rss_scope"] in ("run", "process")
    assert m["normalisation"] == {"mean": mapped.mean, "std": mapped.std}


@pytest.mark.slow  # a CLI subprocess
def test_cli_trains_through_the_cache_with_a_progress_bar(tmp_path):
    folder = write_noise_folder(tmp_path / "imgs", per_class=8)
    proc = run_cli(
        tmp_path, "teacher", "--dataset", f"folder:{folder}", "--image-size", "12", "--storage", "memmap",
        "--family", "mlp", "--size", "8", "--epochs", "1", "--store", tmp_path / "runs", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "decoding 24 images of imgs into the cache" in proc.stderr and "24/24" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["config"]["data"]["storage"] == "memmap" and out["runs"][0]["status"] == "finished"
    assert (tmp_path / "data" / "cache").is_dir()


def test_evaluation_batches_shrink_with_the_image_size():
    """1024 small images per evaluation batch as before; 224 px RGB images come 55 at a time,
    so the activations of a large model at that size stay in tens of MB per batch."""

    def batch_sizes(x: torch.Tensor) -> list[int]:
        seen: list[int] = []
        model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(x.shape[1], 2))
        model.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
        assert predict_logits(model, x).shape == (len(x), 2)
        return seen

    assert batch_sizes(torch.zeros(1500, 1, 28, 28)) == [1024, 476]
    assert batch_sizes(torch.zeros(120, 3, 224, 224)) == [55, 55, 10] and (1 << 23) // (3 * 224 * 224) == 55


def resident_bytes_of(path) -> int:
    """This process's resident pages of the mappings of `path` (/proc/self/smaps, Linux)."""
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        pytest.skip("no /proc/self/smaps")
    total, ours = 0, False
    for line in smaps.read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            ours = line.endswith(str(path))
        elif ours and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


@pytest.mark.slow
def test_random_batches_from_a_mapped_file_keep_resident_memory_bounded(tmp_path):
    """64-row batches drawn at random over a 207 MB cache file (7,500 rows of 96 px RGB), as a
    shuffled epoch reads them. The kernel maps more than each row around every fault (fault-around),
    so counting only the bytes copied let ~the whole file stay resident before a release."""
    rows, shape = 7500, (3, 96, 96)
    path = tmp_path / "images.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, *shape))[:] = 7  # in the page cache now
    mapped = MappedImages(np.load(path, mmap_mode="r"), np.arange(rows), 0.0, 1.0)
    gen = torch.Generator().manual_seed(0)
    peak = 0
    for _ in range(100):  # 6,400 rows, 177 MB copied
        batch = mapped.index_select(0, torch.randint(0, rows, (64,), generator=gen))
        assert batch.shape == (64, *shape) and abs(float(batch[0, 0, 0, 0]) - 7 / 255) < 1e-6
        peak = max(peak, resident_bytes_of(path))
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB of the file stayed resident between batches"
