"""report.md: the ablation verdicts (a part "matters" only beyond the noise of the question sample); the preset line."""

from __future__ import annotations

from vistune.demo.encoder import WorldEncoderOptions
from vistune.demo.report import _tokens, ablation_verdicts
from vistune.demo.settings import DemoSettings, replace


def _scores(overall: float, n: int = 500) -> dict:
    return {"closed": {"overall": overall, "n": n}}


def test_verdicts_separate_real_differences_from_noise():
    lines = ablation_verdicts(
        _scores(0.60),
        {
            "without stage 1": _scores(0.59),  # 1 point on 500 questions: noise
            "stage 2 on captions only (no instruction data)": _scores(0.10),  # a real loss
            "random frozen encoder": _scores(0.75),  # removing the part helped: said so
        },
    )
    text = "\n".join(lines)
    assert "- without stage 1: **not measurably**" in text
    assert "- stage 2 on captions only (no instruction data): **yes**" in text
    assert "- random frozen encoder: **no, the opposite**" in text
    assert "5.11 points on ScienceQA" in text  # each line names what the paper found


def test_the_margin_shrinks_with_more_questions():
    small = ablation_verdicts(_scores(0.60, n=100), {"without stage 1": _scores(0.52, n=100)})
    large = ablation_verdicts(_scores(0.60, n=5000), {"without stage 1": _scores(0.52, n=5000)})
    assert "**not measurably**" in small[-1]
    assert "**yes**" in large[-1]


def test_verdicts_compare_the_answer_style_asked_for():
    full = {**_scores(0.40), "closed_sentence": _scores(0.90)["closed"]}
    ablated = {**_scores(0.40), "closed_sentence": _scores(0.30)["closed"]}
    short = ablation_verdicts(full, {"without stage 1": ablated})
    sentence = ablation_verdicts(full, {"without stage 1": ablated}, style="sentence")
    assert "(short answers)" in short[0] and "**not measurably**" in short[-1]
    assert "(sentence answers)" in sentence[0] and "**yes**" in sentence[-1]


def test_the_preset_line_names_the_image_tokens_and_the_position_code_magnitude():
    assert _tokens(DemoSettings()) == "9 cell tokens with a 2-D position code x 8, 1 global token"
    plain = replace(DemoSettings(), encoder=WorldEncoderOptions(position_code=False))
    assert _tokens(plain) == "9 cell tokens"
