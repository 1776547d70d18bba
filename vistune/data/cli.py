"""`vistune data ...`: look at LLaVA data the way the model will see it.

    vistune data preview train.json --tokenizer tok/ --template vicuna_v1 --limit 3
    vistune data preview train.json --model runs/stage2 --json > tokens.jsonl

`preview` shows each record's tokens with their label mask: supervised tokens (what the loss is computed on) are
highlighted, or wrapped in ⟦...⟧ where the output has no colour; each image's tokens are shown as <image×N>.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from vistune.errors import AllMaskedError, VistuneError

data_app = typer.Typer(
    help="Inspect LLaVA-format data: what the model is trained on.",
    no_args_is_help=True,
    add_completion=False,
)

SUPERVISED_OPEN, SUPERVISED_CLOSE = "⟦", "⟧"


def register(app: typer.Typer) -> None:
    """Add the `data` command group to the root `vistune` app."""
    app.add_typer(data_app, name="data")


@dataclass(frozen=True)
class PreviewSettings:
    """What preview needs from a model directory (or the command line)."""

    tokenizer_dir: Path
    template: str | None
    image_token_id: int
    num_image_tokens: int | None


@data_app.command("preview")
def preview(
    data: Path = typer.Argument(..., help="LLaVA JSON (a list of records) or JSONL file."),
    model: Path | None = typer.Option(None, "--model", help="A vistune or llava-hf model directory."),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="A tokenizer directory (or a .gguf file)."
    ),
    template: str | None = typer.Option(
        None, "--template", help="Conversation template (default: the model's)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per record: id, input_ids, labels."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N records."),
    num_image_tokens: int | None = typer.Option(
        None, "--num-image-tokens", min=1, help="Tokens per image (default: the model's, else 1)."
    ),
    max_length: int | None = typer.Option(None, "--max-length", min=1, help="Truncate as training would."),
) -> None:
    """Show the tokens of each record with their label mask (supervised = trained on).

    Example: vistune data preview data/stage2.json --tokenizer tok/ --template vicuna_v1 --limit 2
    """
    from vistune.data.records import read_records

    settings = _settings(model, tokenizer, template, num_image_tokens)
    if settings.template is None:
        raise VistuneError(
            "--template is needed (the model directory does not name one); e.g. --template vicuna_v1"
        )
    from vistune.text.templates import get_template

    tmpl = get_template(settings.template)  # fail on a bad name before loading anything heavy
    tok = _load_tokenizer(settings.tokenizer_dir)
    records = read_records(data, limit=limit)
    n_tokens = settings.num_image_tokens or 1
    show = _print_json if as_json else _RichPrinter().show
    stats = {"records": 0, "tokens": 0, "supervised": 0, "all_masked": 0, "truncated": 0}
    for record in records:
        row = _preview_record(record, tok, tmpl, n_tokens, settings.image_token_id, max_length)
        stats["records"] += 1
        stats["tokens"] += len(row.input_ids)
        stats["supervised"] += row.supervised
        stats["all_masked"] += row.error is not None
        stats["truncated"] += row.truncated
        show(row)
    if not as_json:
        _RichPrinter().summary(stats, tmpl.name, n_tokens)


@dataclass(frozen=True)
class PreviewRow:
    """One record as training sees it; `pieces` are (kind, text) runs, kind in prompt / supervised / image."""

    id: str
    input_ids: list[int]
    labels: list[int]
    num_images: int
    truncated: bool
    supervised: int
    error: str | None
    pieces: list[tuple[str, str]]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "input_ids": self.input_ids,
            "labels": self.labels,
            "num_images": self.num_images,
            "truncated": self.truncated,
        }
        if self.error:
            out["error"] = self.error
        return out


def _preview_record(
    record: Any, tok: Any, template: Any, num_image_tokens: int, image_token_id: int, max_length: int | None
) -> PreviewRow:
    """Tokenize one record exactly as training does; an all-masked record is shown with its error, not raised."""
    from vistune.text.tokenize import IGNORE_INDEX, encode_conversation, truncate_encoding

    try:
        enc = encode_conversation(
            record.conversations,
            tok,
            template,
            num_image_tokens=num_image_tokens,
            image_token_id=image_token_id,
            record_id=record.id,
        )
    except AllMaskedError as err:
        return PreviewRow(record.id, [], [], 0, False, 0, str(err), [])
    ids, labels, num_images, truncated = truncate_encoding(enc, max_length)
    supervised = sum(label != IGNORE_INDEX for label in labels)
    error = None if supervised else f"record {record.id}: all labels are masked, so training skips it"
    return PreviewRow(
        record.id, ids, labels, num_images, truncated, supervised, error, _pieces(enc, len(ids))
    )


def _pieces(enc: Any, n: int) -> list[tuple[str, str]]:
    """Group the first n tokens into runs of (kind, text), kind in prompt / supervised / image.

    Text comes from the rendered string through each token's character span, so leading spaces are shown exactly
    as they are tokenized (decoding single tokens would drop them for Llama-style tokenizers).
    """
    from vistune.text.tokenize import IGNORE_INDEX

    image_starts = {a: b for a, b in enc.image_regions}
    pieces: list[tuple[str, str]] = []
    done = 0  # characters of enc.text already shown
    i = 0
    while i < n:
        if i in image_starts:
            end = min(image_starts[i], n)
            pieces.append(("image", f"<image×{end - i}>"))
            done = max(done, enc.token_spans[i][1])
            i = end
            continue
        a, b = enc.token_spans[i]
        kind = "supervised" if enc.labels[i] != IGNORE_INDEX else "prompt"
        text = enc.text[max(a, done) : b]
        done = max(done, b)
        if pieces and pieces[-1][0] == kind:
            pieces[-1] = (kind, pieces[-1][1] + text)
        else:
            pieces.append((kind, text))
        i += 1
    return pieces


def _print_json(row: PreviewRow) -> None:
    sys.stdout.write(json.dumps(row.to_json()) + "\n")


class _RichPrinter:
    """Human view: colours in a terminal, ⟦supervised⟧ markers where there is no colour."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(highlight=False, soft_wrap=True)
        self.markers = self.console.color_system is None

    def show(self, row: PreviewRow) -> None:
        from rich.text import Text

        flags = "  [truncated]" if row.truncated else ""
        header = (
            f"── record {row.id}: {len(row.input_ids)} tokens, {row.supervised} supervised, "
            f"{row.num_images} image(s){flags}"
        )
        self.console.print(Text(header, style="bold"))
        body = Text()
        for kind, text in row.pieces:
            if kind == "image":
                body.append(text, style="magenta")
            elif kind == "supervised":
                body.append(
                    f"{SUPERVISED_OPEN}{text}{SUPERVISED_CLOSE}" if self.markers else text, "bold green"
                )
            else:
                body.append(text, style="dim")
        self.console.print(body)
        if row.error:
            self.console.print(Text(f"warning: {row.error}", style="bold red"))

    def summary(self, stats: dict[str, int], template: str, num_image_tokens: int) -> None:
        share = stats["supervised"] / stats["tokens"] if stats["tokens"] else 0.0
        self.console.print(
            f"{stats['records']} records, {stats['tokens']} tokens, {stats['supervised']} supervised "
            f"({share:.1%}), {stats['truncated']} truncated, {stats['all_masked']} all-masked "
            f"(template {template}, {num_image_tokens} tokens per image)"
        )
        if self.markers:
            self.console.print(f"{SUPERVISED_OPEN}...{SUPERVISED_CLOSE} = supervised (trained on)")


# --------------------------------------------------------------------------------------------------- settings


def _settings(
    model: Path | None, tokenizer: Path | None, template: str | None, num_image_tokens: int | None
) -> PreviewSettings:
    from vistune.text.tokenize import DEFAULT_IMAGE_TOKEN_ID

    if (model is None) == (tokenizer is None):
        raise VistuneError("give exactly one of --model DIR or --tokenizer DIR")
    if tokenizer is not None:
        return PreviewSettings(tokenizer, template, DEFAULT_IMAGE_TOKEN_ID, num_image_tokens)
    cfg = _read_model_config(model)
    return PreviewSettings(
        tokenizer_dir=model / "tokenizer" if (model / "tokenizer").is_dir() else model,
        template=template or cfg.get("template"),
        image_token_id=_image_token_id(cfg),
        num_image_tokens=num_image_tokens or _num_image_tokens(cfg),
    )


def _read_model_config(model: Path) -> dict[str, Any]:
    """config.json of a vistune (`"format": "vistune"`) or llava-hf (`"model_type": "llava"`) model directory."""
    path = model / "config.json"
    if not path.is_file():
        raise VistuneError(f"{model}: not a model directory (no config.json); pass --tokenizer DIR instead")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise VistuneError(f"{path}: not valid JSON ({err})") from None
    if cfg.get("format") != "vistune" and cfg.get("model_type") != "llava":
        raise VistuneError(
            f'{path}: neither a vistune model ("format": "vistune") nor a llava-hf one ("model_type": "llava")'
        )
    return cfg


def _image_token_id(cfg: dict[str, Any]) -> int:
    from vistune.text.tokenize import DEFAULT_IMAGE_TOKEN_ID

    for key in ("image_token_id", "image_token_index"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return DEFAULT_IMAGE_TOKEN_ID


def _num_image_tokens(cfg: dict[str, Any]) -> int | None:
    """Tokens per image from the config alone (no model is built): explicit, or patches of a ViT config."""
    if isinstance(cfg.get("num_image_tokens"), int):
        return cfg["num_image_tokens"]
    if cfg.get("format") == "vistune":
        vision = cfg.get("vision") or {}
        hf, keep_cls = vision.get("hf_config") or {}, vision.get("select_feature") == "cls_patch"
    else:  # llava-hf: "default" drops CLS, "full" keeps it
        hf, keep_cls = cfg.get("vision_config") or {}, cfg.get("vision_feature_select_strategy") == "full"
    size, patch = hf.get("image_size"), hf.get("patch_size")
    if not (isinstance(size, int) and isinstance(patch, int)):
        return None
    has_cls = "clip" in str(hf.get("model_type", "clip"))  # CLIP towers have a CLS token, SigLIP's don't
    return (size // patch) ** 2 + int(keep_cls and has_cls)


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        if path.is_file() and path.suffix == ".gguf":
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise VistuneError(f"{path}: cannot load a tokenizer from here ({err})") from None
