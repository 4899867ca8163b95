"""LoRA on a shared base model, switched by a pointer flip instead of PEFT's ``set_adapter``.

:class:`LoRAWeights` is one loaded adapter: per target module, ``A`` (rank x in) and ``B`` (out x rank)
with the scale folded into ``B``. :class:`LoRARuntime` binds at most one adapter to the model at a
time (the node serializes generation, so the binding is the request's):

* ``merged`` (plain ``nn.Linear``): the module's ``weight`` is pointed at a per-module scratch buffer
  holding ``W + B @ A``; unbinding points it back at the untouched original. No per-token cost, and
  the base weights are never modified, so nothing drifts however many switches happen.
* ``unmerged`` (any linear-like layer, e.g. a 4-bit one): the module is wrapped once; the wrapper adds
  ``B(A(x))`` when an adapter is bound and is a plain call through otherwise.

Switching between two loaded adapters costs a few small matrix products (merged) or nothing but
attribute writes (unmerged); PEFT's ``set_adapter`` walks every module instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.nn import functional as F

from inference.validate import LoraSpec, ModuleShape, TensorPair

Mode = Literal["merged", "unmerged"]


@dataclass(frozen=True, eq=False)
class LoRAWeights:
    """One adapter version, ready to bind: ``modules[name] = (A, B * scale)``."""

    user_id: str
    version: int
    rank: int
    modules: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
    nbytes: int = field(default=0)

    @staticmethod
    def from_pairs(user_id: str, version: int, spec: LoraSpec, pairs: list[TensorPair],
                   dtypes: Mapping[str, torch.dtype]) -> LoRAWeights:
        modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for pair in pairs:
            dtype = dtypes.get(pair.module, torch.float32)
            a = pair.a.to(dtype).contiguous()
            b = (pair.b.to(torch.float32) * spec.scale).to(dtype).contiguous()
            modules[pair.module] = (a, b)
        nbytes = sum(a.nbytes + b.nbytes for a, b in modules.values())
        return LoRAWeights(user_id, version, spec.rank, modules, nbytes)


def _linear_shape(module: nn.Module) -> ModuleShape | None:
    in_f, out_f = getattr(module, "in_features", None), getattr(module, "out_features", None)
    if isinstance(in_f, int) and isinstance(out_f, int) and hasattr(module, "weight"):
        return ModuleShape(in_f, out_f)
    return None


class LoRALinear(nn.Module):
    """A linear layer that adds the bound adapter's ``B(A(x))`` (unmerged serving)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.delta: tuple[torch.Tensor, torch.Tensor] | None = None
        # Look like the layer it wraps to code that inspects the model.
        self.in_features = base.in_features
        self.out_features = base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return cast(torch.Tensor, self.base.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x)
        delta = self.delta
        if delta is None:
            return out
        a, b = delta
        return out + F.linear(F.linear(x.to(a.dtype), a), b).to(out.dtype)


class LoRARuntime:
    def __init__(self, model: nn.Module, mode: Mode = "merged") -> None:
        self.model = model
        self.mode = mode
        self._modules: dict[str, nn.Module] = {}
        self.shapes: dict[str, ModuleShape] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        for name, module in model.named_modules():
            shape = _linear_shape(module)
            if shape is not None and name:
                self._modules[name] = module
                self.shapes[name] = shape
                weight = getattr(module, "weight", None)
                self.dtypes[name] = weight.dtype if isinstance(weight, torch.Tensor) and \
                    weight.is_floating_point() else torch.float32
        self._originals: dict[str, nn.Parameter] = {}
        self._scratch: dict[str, nn.Parameter] = {}
        self._wrappers: dict[str, LoRALinear] = {}
        self.bound: LoRAWeights | None = None

    def _mergeable(self, name: str) -> bool:
        module = self._modules[name]
        return self.mode == "merged" and type(module) is nn.Linear and bool(module.weight.is_floating_point())

    @torch.no_grad()
    def bind(self, weights: LoRAWeights | None) -> None:
        """Make ``weights`` (None: the base model) what the next forward passes use."""
        if weights is self.bound:
            return
        previous = self.bound.modules if self.bound is not None else {}
        wanted = weights.modules if weights is not None else {}
        for name in previous:
            if name not in wanted:
                self._restore(name)
        for name, (a, b) in wanted.items():
            if self._mergeable(name):
                self._merge(name, a, b)
            else:
                self._wrapper(name).delta = (a, b)
        self.bound = weights

    def _merge(self, name: str, a: torch.Tensor, b: torch.Tensor) -> None:
        module = self._modules[name]
        original = self._originals.get(name)
        if original is None:
            original = self._originals[name] = cast(nn.Parameter, module.weight)
        scratch = self._scratch.get(name)
        if scratch is None:
            scratch = self._scratch[name] = nn.Parameter(torch.empty_like(original), requires_grad=False)
        torch.addmm(original, b, a, out=scratch.data)
        if module.weight is not scratch:
            module.weight = scratch

    def _restore(self, name: str) -> None:
        if name in self._wrappers:
            self._wrappers[name].delta = None
        original = self._originals.get(name)
        if original is not None:
            self._modules[name].weight = original

    def _wrapper(self, name: str) -> LoRALinear:
        wrapper = self._wrappers.get(name)
        if wrapper is None:
            parent_name, _, child = name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            wrapper = self._wrappers[name] = LoRALinear(self._modules[name])
            setattr(parent, child, wrapper)
        return wrapper

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "linear_modules": len(self._modules), "wrapped": len(self._wrappers)}
