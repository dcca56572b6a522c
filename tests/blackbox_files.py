"""The digits teacher as a black-box file someone else exported (TorchScript, .pt2 or ONNX),
behind an input contract unlike the dataset's: shared by the black-box tests and the Teacher
page's upload test."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.deploy.export import float_onnx
from kd_core.train.blackbox import InputContract

MEAN3, STD3 = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DIGITS = [str(i) for i in range(10)]


class BehindContract(nn.Module):
    """The digits teacher as a file someone else exported: it takes 3-channel 16×16 images
    normalised with ImageNet's mean/std, and makes them grey 8×8 digits internally."""

    def __init__(self, inner: nn.Module, data_mean: float, data_std: float, reverse: bool = False):
        super().__init__()
        self.inner, self.data_mean, self.data_std, self.reverse = inner, data_mean, data_std, reverse
        self.register_buffer("mean", torch.tensor(MEAN3).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD3).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 16, 16) -> (B, 10)
        grey = (x * self.std + self.mean).mean(1, keepdim=True)
        logits = self.inner((F.avg_pool2d(grey, 2) - self.data_mean) / self.data_std)
        return logits.flip(1) if self.reverse else logits


def contract(classes=DIGITS, **kw) -> InputContract:
    return InputContract.from_dict({"channels": 3, "size": 16, "mean": MEAN3, "std": STD3, "classes": classes, **kw})


class TeacherFiles:
    """`module` written as each kind of file when a test first asks for it (`files[kind]` is its path):
    a .pt2 or ONNX export takes seconds, and tests of TorchScript alone should not wait for them."""

    def __init__(self, folder, module: nn.Module):
        self.folder, self.module, self.paths = folder, module, {}

    def __getitem__(self, kind: str) -> str:
        if kind not in self.paths:
            self.paths[kind] = write(kind, self.module, self.folder)
        return self.paths[kind]


def write(kind: str, module: nn.Module, folder) -> str:
    module = module.eval()
    if kind == "torchscript":
        path = folder / "teacher.pt"
        torch.jit.script(module).save(str(path))
    elif kind == "pt2":
        path = folder / "teacher.pt2"  # exported for a fixed batch of 7: the loader pads the last chunk
        torch.export.save(torch.export.export(module, (torch.zeros(7, 3, 16, 16),)), str(path))
    else:
        path = folder / "teacher.onnx"
        path.write_bytes(float_onnx(module, (3, 16, 16)).SerializeToString())
    return str(path)
