"""Training telemetry: a progress bar, `metrics.jsonl`, optional TensorBoard, and a loss-curve PNG.

Only the main process logs. On resume, `metrics.jsonl` is cut back to the checkpoint's step so the file always
tells the story of one continuous run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


class MetricsLogger:
    """Writes one JSON line per logged step; mirrors scalars to TensorBoard when asked and installed."""

    def __init__(
        self,
        output_dir: str | Path,
        *,
        total_steps: int,
        start_step: int = 0,
        enabled: bool = True,
        progress: bool = True,
        tensorboard: bool = False,
    ) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self._bar = None
        self._writer = None
        self._t0 = time.perf_counter()
        self._samples = 0
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        truncate_metrics(self.path, start_step)
        if progress:
            self._bar = tqdm(
                total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True
            )
        if tensorboard:
            self._writer = _tensorboard_writer(Path(output_dir) / "tensorboard")

    def step(self, step: int, *, samples: int, **scalars: float) -> None:
        """Record optimizer step `step` (1-based count of steps done) with its scalars."""
        if not self.enabled:
            return
        self._samples += samples
        elapsed = time.perf_counter() - self._t0
        record = {
            "step": step,
            **scalars,
            "samples_per_s": self._samples / max(elapsed, 1e-9),
            "time_s": elapsed,
        }
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if key != "step":
                    self._writer.add_scalar(key, value, step)
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            shown = {k: scalars[k] for k in ("loss", "lr", "val_loss") if k in scalars}
            shown["samples/s"] = record["samples_per_s"]
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)

    def log(self, step: int, **scalars: float) -> None:
        """An extra record that is not an optimizer step (e.g. validation loss)."""
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()


def _tensorboard_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        tqdm.write(
            "train.tensorboard=true but tensorboard is not installed (pip install tensorboard); skipping it"
        )
        return None
    return SummaryWriter(str(log_dir))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only records up to `step` (a resumed run rewrites what came after its checkpoint)."""
    kept = [r for r in read_metrics(path) if r["step"] <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def plot_loss(metrics_path: str | Path, out_png: str | Path) -> Path | None:
    """Training (and validation, if any) loss against step, as a PNG. None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    steps, losses = zip(*train, strict=True)
    ax.plot(steps, losses, label="train loss", lw=1)
    if val:
        val_steps, val_losses = zip(*val, strict=True)
        ax.plot(val_steps, val_losses, "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (per supervised token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return Path(out_png)
