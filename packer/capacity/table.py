"""The capacity table every solver packs against: per rank class and adapter count, the token load one
GPU sustains and the ``max_loras`` that sustains it (see ``packer.capacity`` for how it is measured)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from ..model import ArrivalSpec, LengthSpec, ServerDefaults, rank_class
from ..profile import Profile

__all__ = ["count_grid", "GpuConfig", "CapacityModel"]


def count_grid(max_count: int) -> tuple[int, ...]:
    """Adapter counts at which capacity is measured: every count to 8, then steps of at most 1/8."""
    grid, n = [], 1
    while n < max_count:
        grid.append(n)
        n = n + 1 if n < 8 else n + max(1, 2 ** (n.bit_length() - 4))
    grid.append(max_count)
    return tuple(grid)


@dataclass(frozen=True)
class GpuConfig:
    """One capacity-table entry: up to ``max_adapters`` adapters of rank <= ``max_lora_rank`` with
    ``max_loras`` GPU slots sustain ``capacity_tps`` tokens/s."""

    max_lora_rank: int
    max_adapters: int
    max_loras: int
    capacity_tps: float


@dataclass(frozen=True)
class CapacityModel:
    """Capacity per rank class and adapter-count grid point (see the module docstring)."""

    profile: Profile             # the numbers the table was measured on, which every GPU query carries
    lengths: LengthSpec
    arrivals: ArrivalSpec
    base: ServerDefaults
    tokens_per_request: float
    table: dict[int, tuple[GpuConfig, ...]]  # rank class -> entries in increasing max_adapters

    @property
    def rank_classes(self) -> tuple[int, ...]:
        return tuple(sorted(self.table))

    @property
    def configs(self) -> tuple[GpuConfig, ...]:
        return tuple(c for r in self.rank_classes for c in self.table[r])

    def config_for(self, max_rank: int, count: int) -> GpuConfig | None:
        """The entry a GPU with ``count`` adapters of rank <= ``max_rank`` uses (None: count too large)."""
        entries = self.table.get(rank_class(max_rank))
        if not entries:
            return None
        k = bisect.bisect_left([c.max_adapters for c in entries], count)
        return entries[k] if k < len(entries) else None

    def capacity(self, max_rank: int, count: int) -> float:
        """Sustainable tokens/s for ``count`` adapters of rank <= ``max_rank`` (0 if none fits)."""
        c = self.config_for(max_rank, count)
        return c.capacity_tps if c is not None else 0.0

    def max_single_load(self, rank: int) -> float:
        """The most tokens/s one adapter of ``rank`` can get from one GPU."""
        return self.capacity(rank, 1)

    def to_dict(self) -> dict:
        return {"profile": self.profile.name, "profile_fingerprint": self.profile.fingerprint(),
                "tokens_per_request": self.tokens_per_request,
                "table": {str(r): [[c.max_adapters, c.max_loras, c.capacity_tps] for c in es]
                          for r, es in self.table.items()}}
