"""Make a variant of a finished `vistune demo` run directory: its parts linked, one step rerun with changed settings.

Throwaway research script (docs/demo.md, thirteenth round). The new directory links the source run's world, data
and whatever the rerun step does not replace; `experiments/stage2_phases.py NEW ...` then runs stage 1 (pass
`s1lr=2e-3 s1lm=NEW/lm_text`: a new LM or encoder needs its own stage-1 projector) and stage 2 on it.

    python experiments/variant_dir.py SRC NEW lm heads=8            # the LM step: 8 attention heads
    python experiments/variant_dir.py SRC NEW lm induct=3600        # the LM step: 3,600 copying steps
    python experiments/variant_dir.py SRC NEW encoder same=1        # the encoder: per-cell same-shape counts
    python experiments/variant_dir.py SRC NEW encoder gfrom=cells   # the encoder: global token from the cells

keys: lm: heads=N hdim=N (per head) layers=N induct=N; encoder: same=1 esteps=N gfrom=cells|patches ccode=SCALE (class codes)
"""

import json
import os
import sys
import time
from pathlib import Path

from vistune.demo.pipeline import DemoPaths, encoder_step, language_step, load_truths
from vistune.demo.settings import DemoSettings
from vistune.world.build import WorldPaths

src, dst, step = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
args = dict(a.split("=", 1) for a in sys.argv[4:])
assert step in ("lm", "encoder"), step
dst.mkdir(parents=True, exist_ok=True)
linked = ("world", "data", "encoder", "feature_cache") if step == "lm" else ("world", "data", "lm", "lm_text")
for part in linked:
    if not (dst / part).exists():
        os.symlink(src.resolve() / part, dst / part)
s = DemoSettings()
if "heads" in args:
    s.language.num_heads = int(args["heads"])
if "hdim" in args:
    s.language.head_dim = int(args["hdim"])
if "layers" in args:
    s.language.num_layers = int(args["layers"])
if "induct" in args:
    s.language_train.induction_steps = int(args["induct"])
if "same" in args:
    s.encoder_train.same_shape_counts = True
if "gfrom" in args:
    s.encoder.global_from = args["gfrom"]
if "ccode" in args:  # WorldEncoderOptions.class_code at this class_scale
    s.encoder.class_code, s.encoder.class_scale = True, float(args["ccode"])
if "esteps" in args:
    s.encoder_train.steps = int(args["esteps"])
start = time.time()
if step == "lm":
    language_step(DemoPaths(dst), s)
    print(f"LM built in {time.time() - start:.0f} s", flush=True)
else:
    world = WorldPaths(src / "world")
    metrics, _ = encoder_step(
        DemoPaths(dst), s, world, load_truths(world, "train"), load_truths(world, "val")
    )
    print(f"encoder built in {time.time() - start:.0f} s: {json.dumps(metrics)}", flush=True)
