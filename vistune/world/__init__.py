"""The miniature world: synthetic images of colored shapes with exact ground truth, so every stage of vistune
(data generation, both training stages, evaluation) can run and be checked on a CPU in minutes.

Command line::

    vistune world build --out runs/world --train 1000 --val 200 --seed 0 --size 224

Python API::

    from vistune.world import WorldConfig, build_world, load_ground_truth, render_scene, scene_for

    paths = build_world("runs/world", {"train": 1000, "val": 200}, seed=0, size=64)
    truth = load_ground_truth(paths.ground_truth("val"))        # {image_id: ImageTruth}
    t = next(iter(truth.values()))
    t.objects[0].shape, t.objects[0].color, t.objects[0].size    # "star", "red", "large"
    t.objects[0].region, t.objects[0].box                         # "top left", (x, y, w, h) in pixels
    t.related("left_of")                                          # [(ObjectTruth, ObjectTruth), ...]
    render_scene(t.scene, 128)                                    # the same scene at another resolution
    scene_for(seed=0, split="train", index=3)                     # any image's scene, without files

What a scene is (see `scene.py`): 1-6 objects, each a (color, shape) pair unique in its scene, in its own cell of a
3x3 grid (so regions top left / top / ... / center / ... / bottom right and relations left_of / right_of / above /
below are unambiguous), with a size class small / medium / large; optional overlap (each object stays >= 60%
visible); plain or textured (striped, checked, mottled) light backgrounds. Shapes, colors and sizes: `vocab.py`.

Files written (see `build.py`): COCO `annotations/captions_{split}.json` (~5 captions per image) and
`annotations/instances_{split}.json` (categories = shapes, pixel boxes `[x, y, w, h]`, plus color/size/region
attributes), `annotations/ground_truth_{split}.json` (exact facts, see `truth.py`), and `{split}/*.png`.
Deterministic: the same seed and size give the same bytes.
"""

from vistune.world.build import SPLITS, WorldPaths, build_world, image_id, scene_for
from vistune.world.captions import make_captions
from vistune.world.render import box_xywh, render_scene, visible_fractions
from vistune.world.scene import Background, Scene, WorldConfig, WorldObject, sample_scene
from vistune.world.truth import ImageTruth, ObjectTruth, load_ground_truth, relations
from vistune.world.vocab import COLORS, REGIONS, SHAPES, SIZES

__all__ = [
    "COLORS",
    "REGIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "Background",
    "ImageTruth",
    "ObjectTruth",
    "Scene",
    "WorldConfig",
    "WorldObject",
    "WorldPaths",
    "box_xywh",
    "build_world",
    "image_id",
    "load_ground_truth",
    "make_captions",
    "relations",
    "render_scene",
    "sample_scene",
    "scene_for",
    "visible_fractions",
]
