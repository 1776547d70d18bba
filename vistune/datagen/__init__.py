"""GPT-assisted visual instruction data (the LLaVA data pipeline), with exactly-once, resumable runs.

    vistune datagen --captions F --instances F --images DIR --teacher openai --base-url URL --model NAME --out data.json

Pieces: `annotations` (COCO captions + instances), `context` (captions + normalized boxes as text), `prompt_sets`
and `prompts/` (system messages and few-shot examples as data files), `teachers/` (openai, hf, rule-based world),
`parse` (replies -> validated turns -> LLaVA records), `grounding` (replies vs. annotations), `journal` (durable
JSONL), `pipeline` (async, bounded, retrying), `stage1` (caption data), `generate` (the entry points), `loopback`
(a scripted OpenAI-compatible server for tests and benchmarks). See docs/datagen.md.
"""

from vistune.datagen.generate import TeacherOptions, generate, generate_stage1, make_teacher
from vistune.datagen.pipeline import DatagenConfig, RunStats
from vistune.datagen.prompt_sets import FLAVORS

__all__ = [
    "FLAVORS",
    "DatagenConfig",
    "RunStats",
    "TeacherOptions",
    "generate",
    "generate_stage1",
    "make_teacher",
]
