"""`vistune chat`: ask once (answer alone on stdout) or chat interactively about an image."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from vistune.errors import VistuneError

DEVICE_HELP = "auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N."
DTYPE_HELP = "auto (bfloat16 on a GPU, float32 on the CPU), float32, bfloat16 or float16."

HELP = """Chat with a trained model about an image.

With a QUESTION it answers once and exits (the answer alone on stdout). Without one it starts an interactive
multi-turn chat that keeps the image and the history (/image PATH switches image, /reset clears, /exit quits).

Example:  vistune chat --model runs/demo/stage2/final --image runs/demo/world/val/000001.png "What color is the circle?"
"""


def chat(
    question: Annotated[
        str | None, typer.Argument(help="Ask once and exit; omit for an interactive chat.")
    ] = None,
    model: Annotated[
        Path, typer.Option("--model", "-m", help="Model directory (vistune or llava-hf format).")
    ] = ...,
    image: Annotated[Path | None, typer.Option("--image", "-i", help="Image file to talk about.")] = None,
    template: Annotated[
        str | None, typer.Option(help="Conversation template (default: the model's).")
    ] = None,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="0 = off.")] = 0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 256,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling.")] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
) -> None:
    from vistune.infer.chat import ChatSession
    from vistune.infer.generate import GenerationConfig
    from vistune.model.io import load_pretrained

    config = GenerationConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed
    )
    typer.echo(f"loading {model} ...", err=True)
    session = ChatSession(
        load_pretrained(model, device=device, dtype=dtype), template=template, config=config
    )
    session.set_image(image)
    if question is not None:
        _stream_answer(session, question)
        return
    _interactive(session)


def _stream_answer(session, question: str) -> None:
    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    session.ask(question, on_text=write)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _interactive(session) -> None:
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            typer.secho("you> ", fg=typer.colors.GREEN, nl=False, err=True)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            session.reset()
            continue
        try:
            if line.startswith("/image"):
                path = line[len("/image") :].strip()
                session.set_image(Path(path) if path else None)
                continue
            if interactive:
                typer.secho("assistant> ", fg=typer.colors.BLUE, nl=False, err=True)
            _stream_answer(session, line)
        except VistuneError as err:  # a bad path mid-chat should not end the conversation
            typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)


SERVE_HELP = """Serve a model over an OpenAI-compatible API (POST /v1/chat/completions, streaming too) and a web page at /.

Example:  vistune serve --model runs/demo/stage2/final --port 8000   then open http://127.0.0.1:8000/
"""


def serve(
    model: Annotated[
        Path, typer.Option("--model", "-m", help="Model directory (vistune or llava-hf format).")
    ] = ...,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    template: Annotated[
        str | None, typer.Option(help="Conversation template (default: the model's).")
    ] = None,
    name: Annotated[str, typer.Option(help="Model name reported by /v1/models.")] = "vistune",
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
) -> None:
    import uvicorn

    from vistune.infer.server import create_app
    from vistune.model.io import load_pretrained

    typer.echo(f"loading {model} ...", err=True)
    loaded = load_pretrained(model, device=device, dtype=dtype)
    typer.echo(f"serving on {loaded.model.device} in {next(loaded.model.parameters()).dtype}", err=True)
    app = create_app(loaded, model_name=name, template=template)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command("chat", help=HELP)(chat)
    app.command("serve", help=SERVE_HELP)(serve)
