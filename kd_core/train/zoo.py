"""torchvision architectures, sized and shaped like the project's own families.

Each family is built from torchvision's own classes (so its state_dict keys are
torchvision's, and pretrained weights load at width 1) and then adapted:

  * the dataset's class count;
  * the input channels of the first conv (1 for grey images);
  * below `SMALL_INPUT` px, a small-input stem: a 3×3 stride-1 first conv and no early
    max-pool, as for CIFAR ResNets. The ImageNet stem divides a 28 px image by 4 before the
    first block, leaving 1×1 maps by the last stage;
  * a width multiplier (`ModelSpec.width`) scaling every stage's channels; ResNet's depth is
    in its family name (resnet18/34/50);
  * `stage_nodes`: stage name -> module path ("stage1".."stage4", "embedding" last), the
    same naming as MLP/CNN, so feature-based methods read these models through
    torchvision's FX feature extractor. Four stages at output strides 4, 8, 16, 32 with the
    ImageNet stem (a ResNet's layer1-4; the last four resolutions of a MobileNet); the
    small-input stem keeps them at 1, 2, 4, 8 for ResNet and ShuffleNet and at 2, 4, 8, 16
    for the others, so AT, which compares maps of equal size, pairs families that
    downsample alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

# torchvision is imported by the functions that build a model, not here: importing it costs about
# as much as torch itself (its ops pull in torch._dynamo and sympy, 1.3-2 s on 2 cores), and the
# CLI's help, the dashboard's first page and every MLP/CNN run need only this table's names.

SMALL_INPUT = 64  # px: below this the stem keeps full resolution (3×3 stride 1, no max-pool)
WIDTH_RANGE = (0.1, 4.0)


def scaled(channels: int, width: float, multiple: int = 1) -> int:
    """`channels × width`, rounded to a multiple of `multiple`, at least one multiple."""
    return max(multiple, round(channels * width / multiple) * multiple)


@functools.cache
def wide_resnet() -> type[nn.Module]:
    """The WideResNet class, made on first use (it subclasses torchvision's ResNet)."""
    from torchvision.models import resnet

    class WideResNet(resnet.ResNet):
        """torchvision's ResNet with every stage's channels × `width` (64·w, 128·w, 256·w, 512·w).
        At width 1 its state_dict is torchvision's; forward is ResNet's own."""

        def __init__(
            self, block: type[resnet.BasicBlock | resnet.Bottleneck], layers: list[int], width: float, num_classes: int
        ):
            nn.Module.__init__(self)
            base = scaled(64, width)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes, self.dilation, self.groups, self.base_width = base, 1, 1, 64
            self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(base)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(block, base, layers[0])
            self.layer2 = self._make_layer(block, base * 2, layers[1], stride=2)
            self.layer3 = self._make_layer(block, base * 4, layers[2], stride=2)
            self.layer4 = self._make_layer(block, base * 8, layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(base * 8 * block.expansion, num_classes)
            for m in self.modules():  # torchvision's initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    return WideResNet


def _resnet(block: str, layers: list[int]) -> Callable[[float, int], nn.Module]:
    """`block`: the name of torchvision's block class (BasicBlock, Bottleneck)."""

    def build(width: float, k: int) -> nn.Module:
        from torchvision.models import resnet

        return wide_resnet()(getattr(resnet, block), layers, width, k)

    return build


def _mobilenet_v2(width: float, k: int) -> nn.Module:
    from torchvision.models.mobilenetv2 import MobileNetV2

    return MobileNetV2(num_classes=k, width_mult=width)


def _mobilenet_v3(arch: str):
    def build(width: float, k: int) -> nn.Module:
        from torchvision.models import mobilenetv3

        setting, last_channel = mobilenetv3._mobilenet_v3_conf(arch, width_mult=width)
        return mobilenetv3.MobileNetV3(setting, last_channel, num_classes=k)

    return build


def _efficientnet_b0(width: float, k: int) -> nn.Module:
    from torchvision.models import efficientnet

    setting, last_channel = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=width, depth_mult=1.0)
    return efficientnet.EfficientNet(setting, dropout=0.2, last_channel=last_channel, num_classes=k)


# torchvision's four ShuffleNetV2 sizes; other widths scale the x1.0 stages.
SHUFFLE_CHANNELS = {
    0.5: [24, 48, 96, 192, 1024],
    1.0: [24, 116, 232, 464, 1024],
    1.5: [24, 176, 352, 704, 1024],
    2.0: [24, 244, 488, 976, 2048],
}


def _shufflenet_v2(width: float, k: int) -> nn.Module:
    from torchvision.models import shufflenetv2

    # Each unit splits its channels in two halves: stage widths must be even (multiples of 4 here).
    channels = SHUFFLE_CHANNELS.get(width) or [24, *(scaled(c, width, 4) for c in (116, 232, 464)), 1024]
    return shufflenetv2.ShuffleNetV2([4, 8, 4], channels, num_classes=k)


def _regnet(depth: int, w_0: int, w_a: float, w_m: float, group_width: int, se_ratio: float | None = None):
    def build(width: float, k: int) -> nn.Module:
        from torchvision.models import regnet

        # RegNet's widths follow w_0 + w_a·j, quantised by w_m; scaling w_0 and w_a scales them all.
        params = regnet.BlockParams.from_init_params(
            depth, scaled(w_0, width, 8), w_a * width, w_m, min(group_width, scaled(w_0, width, 8)), se_ratio=se_ratio
        )
        return regnet.RegNet(params, num_classes=k, stem_width=scaled(32, width, 8))

    return build


@dataclass(frozen=True)
class ZooFamily:
    name: str
    build: Callable[[float, int], nn.Module]  # (width, classes) -> torchvision-layout model, ImageNet stem
    stem: str  # module path of the first conv
    maxpool: str | None  # module path of the early max-pool a small-input stem drops
    stages: Callable[[nn.Module], list[str]]  # the built model -> module paths of its stage outputs
    embedding: str  # FX node of the pooled, flattened features the classifier reads
    weights: str | None  # torchvision weights enum at width 1 (`torchvision.models.get_weight`)
    note: str = ""


def _named(*paths: str) -> Callable[[nn.Module], list[str]]:
    return lambda _model: list(paths)


def _children(path: str) -> Callable[[nn.Module], list[str]]:
    """Every child of `path` is a stage (RegNet's trunk: a small width may quantise to fewer stages)."""
    return lambda model: [f"{path}.{name}" for name, _ in model.get_submodule(path).named_children()]


def _downsamples(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in module.modules())


def _by_resolution(model: nn.Module) -> list[str]:
    """The last block at each resolution of `features` (MobileNet, EfficientNet): `features.i`
    ends a stage when `features.i+1` downsamples, and the last block ends the last."""
    blocks = list(model.get_submodule("features").children())  # a Sequential: its blocks in order
    ends = [i for i in range(len(blocks) - 1) if _downsamples(blocks[i + 1])]
    # The last four, at output strides 4, 8, 16 and 32 with the ImageNet stem, as a ResNet's
    # layer1-4: stage-pairing methods (AT) can pair a MobileNet with a ResNet stage by stage.
    return [f"features.{i}" for i in [*ends, len(blocks) - 1]][-4:]


_RES = _named("layer1", "layer2", "layer3", "layer4")
_REG = _children("trunk_output")
ZOO: dict[str, ZooFamily] = {
    f.name: f
    for f in (
        ZooFamily("resnet18", _resnet("BasicBlock", [2, 2, 2, 2]), "conv1", "maxpool", _RES, "flatten",
                "ResNet18_Weights.IMAGENET1K_V1", "ResNet-18: 4 stages of basic blocks"),
        ZooFamily("resnet34", _resnet("BasicBlock", [3, 4, 6, 3]), "conv1", "maxpool", _RES, "flatten",
                "ResNet34_Weights.IMAGENET1K_V1", "ResNet-34: 4 stages of basic blocks"),
        ZooFamily("resnet50", _resnet("Bottleneck", [3, 4, 6, 3]), "conv1", "maxpool", _RES, "flatten",
                "ResNet50_Weights.IMAGENET1K_V2", "ResNet-50: 4 stages of bottleneck blocks"),
        ZooFamily("mobilenet_v2", _mobilenet_v2, "features.0.0", None,
                _by_resolution, "flatten", "MobileNet_V2_Weights.IMAGENET1K_V2", "inverted residuals"),
        ZooFamily("mobilenet_v3_small", _mobilenet_v3("mobilenet_v3_small"), "features.0.0", None, _by_resolution,
                "flatten", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", "inverted residuals, squeeze-excitation, hard-swish"),
        ZooFamily("mobilenet_v3_large", _mobilenet_v3("mobilenet_v3_large"), "features.0.0", None, _by_resolution,
                "flatten", "MobileNet_V3_Large_Weights.IMAGENET1K_V1", "inverted residuals, squeeze-excitation, hard-swish"),
        ZooFamily("efficientnet_b0", _efficientnet_b0, "features.0.0", None, _by_resolution, "flatten",
                "EfficientNet_B0_Weights.IMAGENET1K_V1", "MBConv blocks, compound-scaled"),
        ZooFamily("shufflenet_v2", _shufflenet_v2, "conv1.0", "maxpool", _named("maxpool", "stage2", "stage3", "stage4"), "mean",
                None, "channel split and shuffle"),
        ZooFamily("regnet_x_400mf", _regnet(22, 24, 24.48, 2.54, 16), "stem.0", None, _REG, "flatten",
                "RegNet_X_400MF_Weights.IMAGENET1K_V2", "RegNetX, 400 MFLOPs at 224 px"),
        ZooFamily("regnet_y_400mf", _regnet(16, 48, 27.89, 2.09, 8, 0.25), "stem.0", None, _REG, "flatten",
                "RegNet_Y_400MF_Weights.IMAGENET1K_V2", "RegNetY (squeeze-excitation), 400 MFLOPs at 224 px"),
    )
}  # fmt: skip
SHUFFLE_WEIGHTS = {
    0.5: "ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1",
    1.0: "ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1",
    1.5: "ShuffleNet_V2_X1_5_Weights.IMAGENET1K_V1",
    2.0: "ShuffleNet_V2_X2_0_Weights.IMAGENET1K_V1",
}


def weights_name(family: str, width: float) -> str | None:
    """torchvision's pretrained weights for this family at this width, if it publishes any."""
    if family == "shufflenet_v2":
        return SHUFFLE_WEIGHTS.get(width)
    return ZOO[family].weights if width == 1.0 else None


def small_stem(side: int) -> bool:
    return side < SMALL_INPUT


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def _adapt_stem(model: nn.Module, fam: ZooFamily, in_channels: int, small: bool) -> None:
    old = model.get_submodule(fam.stem)
    assert isinstance(old, nn.Conv2d)
    if not small and in_channels == old.in_channels:
        return
    kernel, stride, padding = (3, 1, 1) if small else (old.kernel_size, old.stride, old.padding)
    # torch types a Conv2d's kernel/stride/padding as tuple[int, ...] but takes tuple[int, int]: these are 2-d
    new = nn.Conv2d(in_channels, old.out_channels, kernel, stride, padding, bias=old.bias is not None)  # type: ignore[arg-type]
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    _set(model, fam.stem, new)
    if small and fam.maxpool:
        _set(model, fam.maxpool, nn.Identity())


def build_zoo(family: str, width: float, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A torchvision `family` at `width` for (C, H, W) inputs and `num_classes` outputs."""
    fam = ZOO[family]
    c, h, w = input_shape
    model = fam.build(width, num_classes)
    _adapt_stem(model, fam, c, small_stem(min(h, w)))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            # torchvision's MobileNetV3 keeps BN statistics with momentum 0.01, tuned for 600
            # ImageNet epochs: after a few hundred steps they still hold their initial values
            # and eval-mode accuracy is at chance while training accuracy climbs. PyTorch's
            # default 0.1 serves runs of minutes; pretrained weights bring their own statistics.
            m.momentum = 0.1
    nodes = {f"stage{i + 1}": p for i, p in enumerate(fam.stages(model))}
    nodes["embedding"] = fam.embedding
    model.stage_nodes = nodes  # type: ignore[assignment]  # nn.Module types attributes as Tensor | Module
    return model
