"""Named intermediate features of the model families, for the feature and relation methods.

Each family names its stages in `model.stage_nodes` (stage name -> FX node / module path,
"embedding" last). `feature_forward` turns a model into a function x -> Outputs(logits,
{stage: tensor}) with torchvision's FX feature extractor; where FX cannot trace a model it
falls back to forward hooks on the same modules. Both share the model's parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from kd_core.errors import ConfigError
from kd_core.methods import Outputs

LOGITS = "__logits__"


def stage_nodes(model: nn.Module) -> dict[str, str]:
    nodes = getattr(model, "stage_nodes", None)
    if not nodes:
        raise ConfigError(
            f"{type(model).__name__} names no stages, so feature-based methods cannot "
            "read it; use an MLP or CNN from this project."
        )
    return dict(nodes)


class FeatureForward:
    """x -> Outputs(logits, {stage: features}) for `stages`, in that order; the plain model
    when no stage is asked for. FX first; forward hooks where FX cannot trace the model, or
    when `hooks` forces them (tests compare the two). `close` removes any hooks."""

    def __init__(self, model: nn.Module, stages: tuple[str, ...], hooks: bool = False):
        self.model, self.extractor, self.handles = model, None, []
        self.captured: dict[str, torch.Tensor] = {}
        nodes = stage_nodes(model) if stages else {}
        self.wanted = {s: nodes[s] for s in stages}
        self.uses = "model" if not stages else "hooks"
        if stages and not hooks:
            # Imported here, not at the top: torchvision costs 1.3-2 s to import on 2 cores, and
            # only a run with a feature-based method gets here (engine and CLI import this module).
            from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

            try:
                # One key per node: an MLP's last hidden layer is also its embedding.
                self.extractor = create_feature_extractor(
                    model, {**{n: n for n in set(self.wanted.values())}, get_graph_node_names(model)[1][-1]: LOGITS}
                )
                self.uses = "fx"
            except Exception:  # FX cannot trace it (data-dependent control flow and the like)
                self.extractor = None
        if self.uses == "hooks":
            modules = dict(model.named_modules())
            missing = sorted({p for p in self.wanted.values() if p not in modules})
            if missing:  # a functional op's node (torch.flatten): only FX can read it
                raise ConfigError(
                    f"{type(model).__name__}: stage node(s) {', '.join(missing)} are not modules, and FX "
                    "could not trace the model to read them."
                )
            for path in set(self.wanted.values()):
                self.handles.append(modules[path].register_forward_hook(self._keep(path)))

    def _keep(self, path: str):
        def hook(_module, _inputs, output):
            self.captured[path] = output

        return hook

    def __call__(self, x: torch.Tensor) -> Outputs:
        if self.extractor is not None:
            out = self.extractor(x)
            return Outputs(out[LOGITS], {stage: out[node] for stage, node in self.wanted.items()})
        self.captured.clear()
        logits = self.model(x)
        features = {stage: self.captured[node] for stage, node in self.wanted.items()}
        self.captured.clear()  # hold no activations between calls
        return Outputs(logits, features)

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles, self.captured = [], {}


@torch.no_grad()
def stage_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Every stage's per-sample shape, from one forward pass of two zero images (eval mode;
    the training flag is restored)."""
    nodes = stage_nodes(model)
    was_training = model.training
    model.eval()
    forward = FeatureForward(model, tuple(nodes))
    try:
        device = next(model.parameters()).device
        out = forward(torch.zeros(2, *input_shape, device=device))
    finally:
        forward.close()
        model.train(was_training)
    return {k: tuple(v.shape[1:]) for k, v in out.features.items()}
