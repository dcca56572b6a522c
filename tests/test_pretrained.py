"""Starting weights: a torchvision state_dict file adapted to grey images and another class
count; a file for another architecture refused clearly (library and CLI); offline, the
torchvision route says which file to put where."""

from __future__ import annotations

import pytest
import torch
import torchvision

from helpers import CodeRunningPickle, assert_clean_failure, run_cli
from kd_core.config import ModelSpec
from kd_core.errors import CheckpointError, ConfigError
from kd_core.store import Store
from kd_core.train.models import build_model
from kd_core.train.pretrained import load_init_weights, torchvision_file

GREY28 = (1, 28, 28)


@pytest.fixture(scope="module")
def imagenet_mobilenet(tmp_path_factory):
    """A torchvision mobilenet_v3_small as torchvision builds it (RGB, 1000 classes), saved as a state_dict."""
    torch.manual_seed(0)
    state = torchvision.models.mobilenet_v3_small().state_dict()
    path = tmp_path_factory.mktemp("weights") / "mnv3s.pth"
    torch.save(state, path)
    return path, state


def test_a_torchvision_file_is_adapted_to_grey_inputs_and_ten_classes(imagenet_mobilenet):
    path, state = imagenet_mobilenet
    spec = ModelSpec("mobilenet_v3_small")
    model = build_model(spec, GREY28, 10)
    notes = load_init_weights(model, spec, str(path))
    mine = model.state_dict()
    # grey = the sum of the RGB filters: the same response to a grey image as the RGB stem gave
    torch.testing.assert_close(mine["features.0.0.weight"], state["features.0.0.weight"].sum(1, keepdim=True))
    assert mine["classifier.3.weight"].shape == (10, 1024)
    assert not torch.equal(mine["classifier.3.weight"], state["classifier.3.weight"][:10])
    same = [k for k in mine if k not in ("features.0.0.weight", "classifier.3.weight", "classifier.3.bias")]
    assert all(torch.equal(mine[k], state[k]) for k in same)
    assert "summed over its 3 input channels" in notes[0] and "1000 classes" in notes[0]


@pytest.mark.slow
def test_the_small_input_stem_of_a_resnet_starts_fresh_and_says_so(tmp_path):
    state = torchvision.models.resnet18(num_classes=10).state_dict()
    torch.save(state, tmp_path / "r18.pth")
    spec = ModelSpec("resnet18")
    model = build_model(spec, GREY28, 10)
    notes = load_init_weights(model, spec, str(tmp_path / "r18.pth"))
    assert "first conv re-initialised" in notes[0] and "[64, 3, 7, 7]" in notes[0]
    torch.testing.assert_close(model.state_dict()["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    torch.testing.assert_close(model.state_dict()["fc.weight"], state["fc.weight"])  # same class count: kept


@pytest.mark.parametrize(
    "spec, words",
    [
        (ModelSpec("resnet18"), "do not fit a resnet18 ×1"),
        (ModelSpec("mobilenet_v3_small", width=0.5), "do not fit a mobilenet_v3_small ×0.5"),
        (ModelSpec("mlp", 64, 1), "do not fit a mlp 64"),
    ],
)
def test_a_file_for_another_architecture_or_width_is_refused(imagenet_mobilenet, spec, words):
    path, _ = imagenet_mobilenet
    model = build_model(spec, GREY28, 10)
    with pytest.raises(CheckpointError, match=words) as err:
        load_init_weights(model, spec, str(path))
    assert "another architecture or width" in str(err.value)


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path):
    target = tmp_path / "was_run"
    torch.save({"state_dict": CodeRunningPickle(str(target))}, tmp_path / "evil.pt")
    spec = ModelSpec("mobilenet_v3_small", width=0.1)
    with pytest.raises(CheckpointError, match="not a readable PyTorch weights file"):
        load_init_weights(build_model(spec, GREY28, 10), spec, str(tmp_path / "evil.pt"))
    assert not target.exists()


def test_offline_the_torchvision_route_names_the_file_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = ModelSpec("mobilenet_v3_small")
    _, url, file = torchvision_file(spec)
    assert file.parent == tmp_path / "hub" / "checkpoints" and file.name == url.rsplit("/", 1)[1]
    model = build_model(spec, GREY28, 10)
    try:
        notes = load_init_weights(model, spec, "torchvision")
    except CheckpointError as err:  # this machine is offline
        assert f"put the file {file.name}" in str(err) and str(file.parent) in str(err) and url in str(err)
        assert not list(file.parent.glob("*.part"))  # no half-downloaded file left behind
    else:  # a machine with network access downloaded it to that very place
        assert file.is_file() and "MobileNet_V3_Small_Weights" in notes[0]


def test_torchvision_weights_only_at_published_widths():
    with pytest.raises(ConfigError, match="only at width 1"):
        torchvision_file(ModelSpec("resnet18", width=0.5))
    with pytest.raises(ConfigError, match=r"0\.5, 1, 1\.5 and 2"):
        torchvision_file(ModelSpec("shufflenet_v2", width=0.75))
    assert "X0_5" in torchvision_file(ModelSpec("shufflenet_v2", width=0.5))[0]


@pytest.mark.slow
def test_cli_refuses_a_wrong_architecture_file_before_storing_anything(tmp_path, imagenet_mobilenet):
    path, _ = imagenet_mobilenet
    store = tmp_path / "runs"
    proc = run_cli(
        tmp_path, "teacher", "--dataset", "digits", "--family", "resnet18", "--width", "0.1",
        "--weights", path, "--epochs", "1", "--store", store,
    )  # fmt: skip
    assert_clean_failure(proc, "error:", "do not fit a resnet18 ×0.1", "not in the file (e.g. conv1.weight)")
    assert Store(store).list_runs() == []


@pytest.mark.slow
def test_cli_trains_from_a_fitting_weights_file_and_keeps_it_in_the_config(tmp_path):
    spec = ModelSpec("mobilenet_v3_small", width=0.1)
    torch.manual_seed(3)
    torch.save(build_model(spec, (3, 8, 8), 100).state_dict(), tmp_path / "w.pt")  # RGB, 100 classes
    store = tmp_path / "runs"
    proc = run_cli(
        tmp_path, "teacher", "--dataset", "digits", "--family", "mobilenet_v3_small", "--width", "0.1",
        "--weights", "w.pt", "--epochs", "1", "--store", store, "--json", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (run,) = Store(store).list_runs()
    assert run.config.train.init_weights == str(tmp_path / "w.pt")
    assert "classifier replaced" in proc.stdout and "summed over its 3 input channels" in proc.stdout
