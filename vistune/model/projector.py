"""The projector: maps vision features [N, T, Dv] into the language model's embedding space [N, T, Dlm].

Chosen by name as LLaVA does: `linear` (LLaVA v1) or `mlp{N}x_gelu` (N linear layers with GELU between them;
LLaVA-1.5 uses `mlp2x_gelu`).
"""

from __future__ import annotations

import re

from torch import nn

from vistune.errors import VistuneError

_MLP_GELU = re.compile(r"^mlp(\d+)x_gelu$")
VALID_PROJECTORS = "linear, mlp{N}x_gelu (N >= 1, e.g. mlp2x_gelu)"


def projector_depth(name: str) -> int:
    """Number of linear layers the named projector has; raises VistuneError for an unknown name."""
    if name == "linear":
        return 1
    match = _MLP_GELU.match(name)
    if match and int(match.group(1)) >= 1:
        return int(match.group(1))
    raise VistuneError(f"unknown projector {name!r}; valid projectors are: {VALID_PROJECTORS}")


def build_projector(name: str, in_dim: int, out_dim: int) -> nn.Sequential:
    """`linear` -> Linear(in, out); `mlp{N}x_gelu` -> Linear(in, out), then (GELU, Linear(out, out)) x (N - 1).

    The module layout (a Sequential of Linear/GELU) matches LLaVA's, so the state-dict keys are `0.weight`,
    `2.weight`, ... exactly as in official LLaVA checkpoints' `mm_projector`.
    """
    depth = projector_depth(name)
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)
