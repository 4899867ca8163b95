"""LoRA on a shared base model, many users in one forward pass, switched by pointer flips, never by PEFT.

:class:`LoRAWeights` is one loaded adapter: per target module, ``A`` (rank x in) and ``B`` (out x rank)
with the scale folded into ``B``. :class:`LoRARuntime` decides what the next forward pass applies:

* ``bind_rows(rows)``: row ``i`` of the batch gets ``rows[i]`` (an adapter, or None for the base model);
  ``window(start, stop)`` runs a forward pass over some of them only (new rows prefilled before they join).
  Each targeted layer is wrapped once (:class:`LoRALinear`) and adds its rows' deltas with two batched
  matrix products over per-row *slots* (the Punica / S-LoRA idea, gathered once per batch change, not per
  step): ``out[i] += (x[i] @ A_slot[i]) @ B_slot[i]``. Slots are rewritten only where a row changed, so
  a user joining or leaving a batch costs one adapter copy, not the whole batch. Ranks are zero-padded to
  the largest in the batch; a base-model row has zero slots, so its output is the base model's, exactly.
* ``bind(weights, merge)``: every row the same adapter (a one-user batch). With ``merge`` in ``merged``
  mode the layer's ``weight`` points at a scratch buffer holding ``W + B @ A`` (no per-token cost);
  unbinding points it back at the untouched original, so nothing drifts. The scratch is bounded by
  ``merge_budget_bytes``: layers past the budget stay unmerged and add ``B(A(x))`` per token instead.
  Otherwise (and for quantized layers always) the wrapper adds ``B(A(x))``. The scheduler merges only a
  batch that kept one adapter for a few steps (:mod:`inference.scheduler`): mixed batches make it moot.

Switching costs a few slot copies (batched) or small matrix products (merged) or attribute writes
(unmerged); PEFT's ``set_adapter`` walks every module instead, and its mixed-batch ``adapter_names``
loops over the adapters of a batch in every layer of every step (measured slower, see the README).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    def from_pairs(
        user_id: str, version: int, spec: LoraSpec, pairs: list[TensorPair], dtypes: Mapping[str, torch.dtype]
    ) -> LoRAWeights:
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


class _Slots:
    """Per-row ``A`` (rows x rank x in) and ``B`` (rows x out x rank) of one layer, each row's rank zero-padded;
    the same layout as the adapter's own tensors, so writing a row is two contiguous copies."""

    def __init__(self, rows: int, rank: int, shape: ModuleShape, dtype: torch.dtype, device: torch.device) -> None:
        self.a = torch.zeros(rows, rank, shape.in_features, dtype=dtype, device=device)
        self.b = torch.zeros(rows, shape.out_features, rank, dtype=dtype, device=device)
        self.used = 0  # rows of the current batch that have a delta here

    def write(self, row: int, pair: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        if pair is None:
            self.a[row].zero_()
            self.b[row].zero_()
            return
        a, b = pair
        r = a.shape[0]
        self.a[row, :r].copy_(a)
        self.a[row, r:].zero_()
        self.b[row, :, :r].copy_(b)
        self.b[row, :, r:].zero_()

    @property
    def nbytes(self) -> int:
        return self.a.nbytes + self.b.nbytes


class LoRALinear(nn.Module):
    """A linear layer that adds its rows' ``B(A(x))``: one adapter for every row, or one per row (slots)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.delta: tuple[torch.Tensor, torch.Tensor] | None = None  # every row the same adapter
        self.slots: _Slots | None = None  # one adapter per row
        self.window: tuple[int, int] | None = None  # the slots [start, stop) of the next batch; None: no slots
        # Look like the layer it wraps to code that inspects the model.
        self.in_features = base.in_features
        self.out_features = base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return cast(torch.Tensor, self.base.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x)
        if self.window is not None:
            slots = cast(_Slots, self.slots)
            start, stop = self.window
            n = x.shape[0]
            if n != stop - start:  # a batch that is not the bound one would get other rows' adapters
                raise RuntimeError(f"a batch of {n} rows through a layer bound for rows {start}..{stop - 1}")
            a, b = slots.a[start:stop].transpose(1, 2), slots.b[start:stop].transpose(1, 2)  # views: BLAS transposes
            low = torch.bmm(x.reshape(n, -1, x.shape[-1]).to(a.dtype), a)
            if out.dtype == b.dtype and out.is_contiguous():  # the base output is ours: add in place
                out.view(n, -1, out.shape[-1]).baddbmm_(low, b)
                return out
            return torch.baddbmm(out.reshape(n, -1, out.shape[-1]).to(b.dtype), low, b).to(out.dtype).reshape(out.shape)
        delta = self.delta
        if delta is None:
            return out
        a, b = delta
        low = F.linear(x.to(a.dtype), a)
        if out.dtype == b.dtype and out.is_contiguous():
            out.view(-1, out.shape[-1]).addmm_(low.view(-1, low.shape[-1]), b.t())
            return out
        return out + F.linear(low, b).to(out.dtype)


class LoRARuntime:
    def __init__(
        self, model: nn.Module, mode: Mode = "merged", merge_budget_bytes: int | None = None, max_rows: int = 8
    ) -> None:
        self.model = model
        self.mode = mode
        self.merge_budget_bytes = merge_budget_bytes
        self.max_rows = max_rows
        self._modules: dict[str, nn.Module] = {}
        self.shapes: dict[str, ModuleShape] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        for name, module in model.named_modules():
            shape = _linear_shape(module)
            if shape is not None and name:
                self._modules[name] = module
                self.shapes[name] = shape
                weight = getattr(module, "weight", None)
                self.dtypes[name] = (
                    weight.dtype if isinstance(weight, torch.Tensor) and weight.is_floating_point() else torch.float32
                )
        self._originals: dict[str, nn.Parameter] = {}
        self._scratch: dict[str, nn.Parameter] = {}
        self._wrappers: dict[str, LoRALinear] = {}
        self._slots: dict[str, _Slots] = {}
        self._slot_rank = 0
        self.bound: LoRAWeights | None = None
        self._bound_merge = False
        self._merged: set[str] = set()  # layers whose weight is their scratch now
        self._delta_names: set[str] = set()  # layers whose wrapper adds the bound adapter's delta
        self._slots_on = False
        self.rows: list[LoRAWeights | None] = []  # what the slots hold, row by row

    # -- one adapter for every row -------------------------------------------------------------

    @torch.no_grad()
    def bind(self, weights: LoRAWeights | None, merge: bool = True) -> None:
        """Make ``weights`` (None: the base model) what every row of the next forward passes uses.

        ``merge=False`` keeps the delta unmerged even in merged mode."""
        if self._slots_on:
            for wrapper in self._wrappers.values():
                wrapper.window = None  # the slots keep their rows for the next bind_rows
            self._slots_on = False
        merge = merge and self.mode == "merged"
        if weights is self.bound and merge == self._bound_merge:
            return
        wanted = weights.modules if weights is not None else {}
        for name in self._delta_names - wanted.keys():
            self._wrappers[name].delta = None
        for name in [n for n in self._merged if n not in wanted or not merge]:
            self._restore(name)
        deltas = set()
        for name, (a, b) in wanted.items():
            if merge and self._mergeable(name):
                self._merge(name, a, b)
            else:
                if name in self._merged:
                    self._restore(name)
                self._wrapper(name).delta = (a, b)
                deltas.add(name)
        self._delta_names = deltas
        self.bound = weights
        self._bound_merge = merge

    def _mergeable(self, name: str) -> bool:
        module = self._modules[name]
        if not (type(module) is nn.Linear and bool(module.weight.is_floating_point())):
            return False
        if name in self._scratch or self.merge_budget_bytes is None:
            return True
        return self.scratch_bytes + module.weight.nbytes <= self.merge_budget_bytes

    def _merge(self, name: str, a: torch.Tensor, b: torch.Tensor) -> None:
        module = self._modules[name]
        if name in self._wrappers:
            self._wrappers[name].delta = None
        self._merged.add(name)
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
        """Point a merged layer back at its original weight."""
        self._merged.discard(name)
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

    # -- one adapter per row -------------------------------------------------------------------

    @torch.no_grad()
    def bind_rows(self, rows: Sequence[LoRAWeights | None]) -> None:
        """Row ``i`` of the next forward passes uses ``rows[i]``; only rows that changed are rewritten."""
        if len(rows) > self.max_rows:
            raise ValueError(f"{len(rows)} rows, more than the runtime's {self.max_rows}")
        self.bind(None)
        rank = max((w.rank for w in rows if w is not None), default=0)
        if rank > self._slot_rank:  # a larger rank than the slots hold: allocate again, rewrite every row
            self._slots.clear()
            self._slot_rank = rank
            self.rows = []
        before = self.rows
        names = {name for w in rows if w is not None for name in w.modules}
        for name in names - self._slots.keys():
            self._slots[name] = _Slots(
                self.max_rows,
                self._slot_rank,
                self.shapes[name],
                self.dtypes[name],
                cast(torch.Tensor, self._modules[name].weight).device,
            )
            self._wrapper(name).slots = self._slots[name]
        # Invariant: slot i holds row i's delta for i < len(self.rows), zeros beyond; so only rows whose
        # adapter changed are written.
        for name, slots in self._slots.items():
            for i in range(max(len(rows), len(before))):
                new = rows[i] if i < len(rows) else None
                old = before[i] if i < len(before) else None
                if new is old:
                    continue
                new_pair = new.modules.get(name) if new is not None else None
                if new_pair is not None or (old is not None and name in old.modules):
                    slots.write(i, new_pair)
            slots.used = sum(1 for w in rows if w is not None and name in w.modules)
        self.rows = list(rows)
        self.window(0, len(rows))

    def window(self, start: int, stop: int) -> None:
        """The next forward pass is rows ``start..stop-1`` of the bound rows (new rows being prefilled)."""
        if not 0 <= start < stop <= len(self.rows):
            raise ValueError(f"rows {start}..{stop - 1} are not all bound ({len(self.rows)} rows)")
        for name, slots in self._slots.items():
            self._wrappers[name].window = (start, stop) if slots.used else None
        self._slots_on = True

    # -- views ---------------------------------------------------------------------------------

    @property
    def scratch_bytes(self) -> int:
        return sum(p.nbytes for p in self._scratch.values())

    @property
    def slot_bytes(self) -> int:
        return sum(s.nbytes for s in self._slots.values())

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "linear_modules": len(self._modules),
            "wrapped": len(self._wrappers),
            "merged_layers": len(self._scratch),
            "scratch_bytes": self.scratch_bytes,
            "slot_bytes": self.slot_bytes,
            "max_rows": self.max_rows,
        }
