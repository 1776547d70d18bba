"""`report.md` of a demo run: the numbers, the loss curves, example images with questions and answers (PNG)."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any

from vistune.demo.pipeline import DemoPaths
from vistune.demo.settings import DemoSettings
from vistune.eval.world import SCORE_KEYS


def write_report(result, s: DemoSettings, world, val_truths: list) -> Path:
    """Write report.md (+ loss_curves.png, examples.png) into the run directory; returns the report path."""
    out = Path(result.out)
    curves = plot_curves(out, out / "loss_curves.png")
    examples = plot_examples(result.scores.get("examples", []), world.images("val"), out / "examples.png")
    copying = _copying(out)
    paths = DemoPaths(out)  # the pipeline's own choice of the LM stage 1 aligned to
    before = paths.stage1_language_model(s) == paths.text_language_model
    aligned = " (aligned to the LM as it was before the copying)" if before else ""
    lines = [
        "# vistune demo: LLaVA on the miniature world",
        "",
        f"Preset sizes: {s.train_images} train / {s.val_images} held-out images of {s.image_size} px; "
        f"{s.teacher_images} images with teacher data ({', '.join(s.flavors)}; the teacher is the rule-based "
        f"`world` teacher); vision encoder pretrained then frozen ({_tokens(s)}); tiny Llama pretrained on the "
        "world's text" + copying + "; "
        f"stage 1 {s.stage1.steps} steps x {s.stage1.batch_size}{aligned}; stage 2 "
        + (
            f"phase 1 (lookup questions: {', '.join(s.lookup_types)}) {s.lookup.steps} steps x "
            f"{s.lookup.batch_size}, phase 2 (all instruction data) "
            if s.lookup is not None
            else ""
        )
        + f"{s.stage2.steps} steps x {s.stage2.batch_size}.",
        "",
        *score_sections(result.scores),
    ]
    if result.encoder_metrics:
        lines += [
            "## The frozen vision encoder (pretrained on the world, read-out accuracy on held-out images)",
            "",
            "| " + " | ".join(result.encoder_metrics) + " |",
            "|" + "---|" * len(result.encoder_metrics),
            "| " + " | ".join(f"{v:.1%}" for v in result.encoder_metrics.values()) + " |",
            "",
        ]
    if result.ablations:
        lines += [
            "## Ablations (same step budget, same evaluation)",
            "",
            *closed_table({"full method": result.scores, **result.ablations}),
            "",
        ]
        for style in _styles(result.scores):
            lines += [*ablation_verdicts(result.scores, result.ablations, style=style), ""]
    lines += ["## Time", "", *time_table(result), ""]
    lines += figure_sections(curves, examples, result)
    lines += chat_section(result.model_dir, [Path(world.images("val")) / val_truths[0].file_name])
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


# What the LLaVA paper found each ablated part to be worth.
_PAPER_FINDING = {
    "without stage 1": "the paper: skipping stage-1 pretraining cost 5.11 points on ScienceQA",
    "stage 2 on captions only (no instruction data)": "the paper: without instruction tuning the LLaVA-Bench "
    "score falls to about a quarter of the full model's",
    "random frozen encoder": "not ablated in the paper, which assumes a pretrained CLIP",
}


def figure_sections(curves: Path | None, examples: Path | None, result: Any) -> list[str]:
    """The loss-curve and example-image sections (each only if its PNG was written), as report lines."""
    lines = ["## Loss curves", "", f"![loss curves]({curves.name})", ""] if curves else []
    if examples:
        lines += [
            "## Examples (held-out images)",
            "",
            f"![examples]({examples.name})",
            "",
            *example_text(result),
        ]
    return lines


def chat_section(model_dir: str | Path, images: list[Path]) -> list[str]:
    """The commands to chat with the trained model about each of `images`, as report lines."""
    commands = [f"vistune chat --model {model_dir} --image {image}" for image in images]
    return ["", "## Chat with the model", "", "```", *commands, "```", ""]


def score_sections(scores: dict[str, Any]) -> list[str]:
    """The held-out closed-question table and the description precision / recall, as report lines."""
    desc = scores["descriptions"]
    return [
        "## Held-out exact match (closed questions)",
        "",
        *closed_table({"this run": scores}),
        "",
        'Each question is asked twice. *short*: it ends with "Answer with a single word or phrase."; the answer must '
        "match exactly after lowercasing and removing articles and trailing punctuation. *sentence*: the bare question; "
        'the model replies in a sentence ("The star is red."), and the one color / shape / number / region it names '
        "(or yes / no) must match exactly; naming none or two different ones is wrong. The majority "
        "baseline always gives a type's most frequent answer.",
        "",
        "## Detailed descriptions (held-out)",
        "",
        f"Objects mentioned (color + shape) against the ground truth, over {desc['n']} images: "
        f"precision {desc['precision']:.1%}, recall {desc['recall']:.1%}.",
        "",
    ]


def _styles(scores: dict[str, Any]) -> list[str]:
    """The answer styles a result was scored in (`short` first; older results have no sentence scores)."""
    return [style for style, key in SCORE_KEYS.items() if key in scores]


def ablation_verdicts(
    full: dict[str, Any], ablations: dict[str, dict[str, Any]], style: str = "short"
) -> list[str]:
    """One honest line per ablation: does removing the part cost accuracy here, as the paper found?

    style: which answer style's closed-question scores to compare (`SCORE_KEYS`).
    A difference counts only beyond two standard errors of the difference of two accuracies on these questions.
    """
    key = SCORE_KEYS[style]
    acc, n = full[key]["overall"], full[key]["n"]
    lines = [f"Does each part matter here, as the paper found? ({style} answers)", ""]
    for name, scores in ablations.items():
        other = scores[key]["overall"]
        margin = 2 * math.sqrt(max(acc * (1 - acc) + other * (1 - other), 1e-12) / max(n, 1))
        delta = acc - other
        if delta > margin:
            verdict = f"**yes**: the full method is {delta:.1%} better (beyond the {margin:.1%} noise margin)"
        elif delta < -margin:
            verdict = f"**no, the opposite**: removing it scored {-delta:.1%} higher (margin {margin:.1%})"
        else:
            verdict = f"**not measurably** here: {delta:+.1%}, within the {margin:.1%} noise margin"
        lines.append(f"- {name}: {verdict} ({_PAPER_FINDING.get(name, 'no paper figure')}).")
    return lines


def closed_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    types = list(next(iter(runs.values()))["closed"]["accuracy"])
    rows = [
        "| run | overall | " + " | ".join(types) + " | description P / R |",
        "|---|---|" + "---|" * len(types) + "---|",
    ]
    first = next(iter(runs.values()))["closed"]
    rows.append(
        "| majority baseline | | "
        + " | ".join(f"{first['majority_baseline'][t]:.1%}" for t in types)
        + " | |"
    )
    for name, scores in runs.items():
        d = scores["descriptions"]
        for style in _styles(scores):
            c = scores[SCORE_KEYS[style]]
            rows.append(
                f"| {name}, {style} | **{c['overall']:.1%}** | "
                + " | ".join(f"{c['accuracy'].get(t, 0.0):.1%}" for t in types)
                + f" | {d['precision']:.1%} / {d['recall']:.1%} |"
            )
    rows.append("")
    rows.append("Questions per type: " + ", ".join(f"{t} {first['counts'][t]}" for t in types) + ".")
    return rows


def time_table(result) -> list[str]:
    rows = ["| step | wall s | CPU s |", "|---|---|---|"]
    rows += [f"| {t.name} | {t.wall_s:.1f} | {t.cpu_s:.1f} |" for t in result.times]
    rows.append(f"| **total** | **{result.total_wall_s:.1f}** | **{result.total_cpu_s:.1f}** |")
    rows += [
        "",
        f"Machine: {platform.machine()}, {_cpu_count()} CPU cores visible. CPU time is the process's own (all its "
        "threads) and its finished worker processes'; wall time on a shared machine is inflated by other work "
        "running at the same time.",
    ]
    return rows


def _copying(out: Path) -> str:
    """The LM's in-context copying phase, as the report's preset line names it ("" when there was none)."""
    record = out / "lm" / "induction.json"
    if not record.is_file():
        return ""
    copying = json.loads(record.read_text())
    return (
        f", then on in-context copying ({len(copying['losses'])} steps; held-out copy accuracy "
        f"{copying['accuracy']:.1%})"
    )


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def plot_curves(out: Path, png: Path) -> Path | None:
    """Encoder, language model, stage-1 and stage-2 losses side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vistune.train.metrics import read_metrics

    curves: dict[str, list[float]] = {}
    enc = out / "encoder" / "metrics.json"
    if enc.is_file():
        curves["vision encoder pretraining"] = json.loads(enc.read_text())["losses"]
    copying = out / "lm" / "induction.json"
    if copying.is_file():
        curves["language model: in-context copying"] = json.loads(copying.read_text())["losses"]
    lm = out / "lm" / "losses.json"
    if lm.is_file():
        curves["language model pretraining"] = json.loads(lm.read_text())
    for stage in ("stage1", "stage2"):
        metrics = out / stage / "metrics.jsonl"
        if metrics.is_file():
            curves[stage.replace("stage", "stage ")] = [
                r["loss"] for r in read_metrics(metrics) if "loss" in r
            ]
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), dpi=110)
    for ax, (name, losses) in zip(list(getattr(axes, "flat", [axes])), curves.items(), strict=True):
        ax.plot(range(1, len(losses) + 1), losses, lw=1)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes_list = list(getattr(axes, "flat", [axes]))
    axes_list[0].set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


def plot_examples(examples: list[dict[str, Any]], image_dir: Path, png: Path) -> Path | None:
    """Each example image next to its questions, the model's answers (ok / wrong) and its description."""
    if not examples:
        return None
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(
        len(examples),
        2,
        figsize=(11, 3.3 * len(examples)),
        dpi=100,
        gridspec_kw={"width_ratios": [1, 2.6]},
        squeeze=False,
    )
    for row, ex in zip(axes, examples, strict=True):
        row[0].imshow(Image.open(image_dir / ex["file_name"]).convert("RGB"), interpolation="nearest")
        row[0].set_axis_off()
        lines = [
            f"Q: {qa['question']}\nA: {qa['answer']}   {'ok' if qa['correct'] else 'WRONG (' + qa['truth'] + ')'}"
            + (f" | {qa['reply']}   {'ok' if qa['reply_correct'] else 'WRONG'}" if "reply" in qa else "")
            for qa in ex["qa"]
        ]
        lines.append("Describe: " + textwrap.fill(ex["description"], 90))
        row[1].text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=8, family="monospace", wrap=True)
        row[1].set_axis_off()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


def example_text(result) -> list[str]:
    lines = []
    for ex in result.scores.get("examples", []):
        lines.append(f"**{ex['file_name']}**")
        lines.append("")
        for qa in ex["qa"]:
            mark = "ok" if qa["correct"] else f"wrong, truth: {qa['truth']}"
            reply = ""
            if "reply" in qa:
                reply = f"; sentence: *{qa['reply']}* ({'ok' if qa['reply_correct'] else 'wrong'})"
            lines.append(f"- {qa['question']} → *{qa['answer']}* ({mark}){reply}")
        lines.append(f"- Describe the image in detail. → *{ex['description']}*")
        lines.append("")
    return lines


def _tokens(s: DemoSettings) -> str:
    """The encoder's image tokens in words, e.g. "9 cell tokens with a 2-D position code x 8, 1 global token"."""
    e = s.encoder
    code = f" with a 2-D position code x {e.position_scale:g}" if e.position_code else ""
    return f"{e.pool_grid**2} cell tokens{code}" + (", 1 global token" if e.global_token else "")
