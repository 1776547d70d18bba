"""`vistune demo --reuse`: which settings rerun which preparation step (`pipeline.step_dependencies`)."""

from vistune.demo.encoder import WorldEncoderOptions
from vistune.demo.language import LanguagePretrainConfig
from vistune.demo.pipeline import step_dependencies
from vistune.demo.pretrain_vision import EncoderPretrainConfig
from vistune.demo.settings import preset, replace


def _changed(**changes) -> set[str]:
    before, after = step_dependencies(preset("fast")), step_dependencies(replace(preset("fast"), **changes))
    return {step for step in before if before[step] != after[step]}


def test_instruction_data_settings_do_not_rerun_the_encoder():
    # The encoder is pretrained on the world alone; the LM's text includes the instruction data.
    assert _changed(lookup_types=["color"]) == {"data", "lm"}
    assert _changed(teacher_images=50) == {"data", "lm"}


def test_a_step_reruns_for_its_own_settings_only():
    assert _changed(encoder_train=EncoderPretrainConfig(steps=7)) == {"encoder"}
    assert _changed(encoder=WorldEncoderOptions(global_token=False)) == {"encoder"}
    assert _changed(language_train=LanguagePretrainConfig(steps=7)) == {"lm"}
    assert _changed(language_train=LanguagePretrainConfig(steps=60, induction_steps=7)) == {"lm"}


def test_a_new_world_reruns_everything():
    # The train-image count once shared a key with the encoder's and the LM's pretraining settings, so a new world
    # size kept an encoder and an LM trained on the old world.
    assert _changed(train_images=1234) == {"world", "data", "encoder", "lm"}
    assert _changed(seed=5) == {"world", "data", "encoder", "lm"}
