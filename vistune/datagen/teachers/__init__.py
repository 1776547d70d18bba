"""Teachers: where replies come from. `openai` (any OpenAI-compatible endpoint), `hf` (a local transformers model),
`world` (RULE-BASED, from the miniature world's ground truth; no language model involved)."""

from vistune.datagen.teachers.base import (
    FatalTeacherError,
    Teacher,
    TeacherReply,
    TeacherRequest,
    TeacherRequestError,
)

TEACHERS: tuple[str, ...] = ("openai", "hf", "world")

__all__ = [
    "TEACHERS",
    "FatalTeacherError",
    "Teacher",
    "TeacherReply",
    "TeacherRequest",
    "TeacherRequestError",
]
