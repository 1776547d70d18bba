"""Teacher prompts as data files: a system message and hand-written few-shot examples per flavor.

Layout of a prompt set (the built-in ones are `prompts/photo` for real photos and `prompts/world` for the
miniature world; `--prompts DIR` takes a directory with the same layout):

    {flavor}/system.txt          the instructions
    {flavor}/flavor.yaml         which context parts the teacher sees: `captions: true`, `boxes: false`
    {flavor}/NNN_context.txt     a few-shot example's context (captions + boxes, as `context.py` writes them)
    {flavor}/NNN_reply.txt       the reply we want for that context

The chat sent to a teacher is: system, then each example as a (user: context, assistant: reply) pair, then the
image's context as the last user message — few-shot prompting as in the LLaVA paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from vistune.errors import VistuneError

FLAVORS: tuple[str, ...] = ("conversation", "detail", "complex_reasoning")
BUILTIN_DIR = Path(__file__).parent / "prompts"
BUILTIN_SETS: tuple[str, ...] = ("photo", "world")


@dataclass(frozen=True)
class FewShot:
    context: str
    reply: str


@dataclass(frozen=True)
class PromptSet:
    """The prompt of one flavor."""

    flavor: str
    system: str
    examples: tuple[FewShot, ...]
    use_captions: bool = True
    use_boxes: bool = True
    source: str = ""

    def messages(self, context: str) -> list[dict[str, str]]:
        """OpenAI-style chat messages asking for this flavor's reply to `context`."""
        chat = [{"role": "system", "content": self.system}]
        for example in self.examples:
            chat += [
                {"role": "user", "content": example.context},
                {"role": "assistant", "content": example.reply},
            ]
        return [*chat, {"role": "user", "content": context}]


def check_flavors(flavors: list[str]) -> list[str]:
    unknown = [f for f in flavors if f not in FLAVORS]
    if unknown or not flavors:
        raise VistuneError(
            f"unknown flavor(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(FLAVORS)}"
        )
    return list(dict.fromkeys(flavors))


def prompt_dir(prompt_set: str, prompts_dir: str | Path | None = None) -> Path:
    """The directory holding the flavor folders: a user's `--prompts DIR`, or a built-in set."""
    if prompts_dir is not None:
        path = Path(prompts_dir)
        if not path.is_dir():
            raise VistuneError(f"--prompts {path} is not a directory; it must hold one folder per flavor")
        return path
    if prompt_set not in BUILTIN_SETS:
        raise VistuneError(f"unknown prompt set {prompt_set!r}; built-in sets are {', '.join(BUILTIN_SETS)}")
    return BUILTIN_DIR / prompt_set


def load_prompts(flavor: str, prompt_set: str = "photo", prompts_dir: str | Path | None = None) -> PromptSet:
    """Read one flavor's system message, context options and few-shot examples."""
    check_flavors([flavor])
    folder = prompt_dir(prompt_set, prompts_dir) / flavor
    system_file = folder / "system.txt"
    if not system_file.is_file():
        raise VistuneError(f"prompt file {system_file} is missing; every flavor folder needs a system.txt")
    examples = []
    for context_file in sorted(folder.glob("*_context.txt")):
        reply_file = context_file.with_name(context_file.name.replace("_context.txt", "_reply.txt"))
        if not reply_file.is_file():
            raise VistuneError(f"few-shot example {context_file} has no matching {reply_file.name}; add it")
        examples.append(FewShot(context_file.read_text().strip(), reply_file.read_text().strip()))
    options = _flavor_options(folder / "flavor.yaml")
    return PromptSet(
        flavor=flavor,
        system=system_file.read_text().strip(),
        examples=tuple(examples),
        use_captions=options["captions"],
        use_boxes=options["boxes"],
        source=str(folder),
    )


def _flavor_options(path: Path) -> dict[str, bool]:
    options = {"captions": True, "boxes": True}
    if not path.is_file():
        return options
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise VistuneError(f"{path} is not valid YAML: {err}") from None
    unknown = sorted(set(data) - set(options))
    if unknown:
        raise VistuneError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys are captions, boxes")
    options.update({k: bool(v) for k, v in data.items()})
    if not any(options.values()):
        raise VistuneError(f"{path}: at least one of captions / boxes must be true")
    return options


def load_instructions(kind: str, prompts_dir: str | Path | None = None) -> list[str]:
    """Instruction phrasings, one a line: `brief` (stage-1 captions) or `detail` (the detail flavor's question).

    A user `--prompts DIR` may override them with `DIR/instructions/{kind}.txt`.
    """
    candidates = [Path(prompts_dir) / "instructions" / f"{kind}.txt"] if prompts_dir else []
    candidates.append(BUILTIN_DIR / "instructions" / f"{kind}.txt")
    path = next(p for p in candidates if p.is_file() or p == candidates[-1])
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise VistuneError(f"instruction file {path} is empty; write one instruction per line")
    return lines
