"""Data-generation throughput (requests/s) at concurrency 1, 4, 16, 64 against a loopback server that answers
every request after 200 ms; prints the speed-up over concurrency 1 (target: >= 12x at 16).

    python benchmarks/bench_datagen_concurrency.py
    python benchmarks/bench_datagen_concurrency.py --delay 0.2 --levels 1,4,16,64 --check

The whole pipeline is measured, not just HTTP: the real `openai` client over loopback, prompt building, reply
parsing, the grounding check and the fsynced journal append per item. The server is `LoopbackChatServer` (a
threaded HTTP server in this process), so at high concurrency the two share the CPU with the client.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from vistune.datagen.annotations import load_annotations
from vistune.datagen.grounding import WORLD_TOTAL_NOUNS, GroundingChecker
from vistune.datagen.loopback import LoopbackChatServer
from vistune.datagen.pipeline import DatagenConfig, RunStats, run_datagen
from vistune.datagen.prompt_sets import FLAVORS, load_instructions, load_prompts
from vistune.datagen.teachers.openai_teacher import OpenAITeacher
from vistune.world import build_world


def measure(root: Path, base_url: str, concurrency: int, items: int) -> RunStats:
    """One pipeline run of `items` items (whole images x 3 flavors) into a fresh output file."""
    ann = root / "annotations"
    annotations = load_annotations(ann / "captions_train.json", ann / "instances_train.json")
    config = DatagenConfig(
        flavors=list(FLAVORS),
        concurrency=concurrency,
        limit=max(1, items // len(FLAVORS)),
        request_timeout=30,
        progress=False,
    )
    return run_datagen(
        annotations,
        OpenAITeacher("loopback", base_url=base_url, timeout=30),
        {f: load_prompts(f, "world") for f in FLAVORS},
        root / f"out_c{concurrency}" / "data.json",
        config,
        instructions={"detail": load_instructions("detail")},
        grounding=GroundingChecker(annotations.categories, annotations.attribute_values(), WORLD_TOTAL_NOUNS),
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="1,4,16,64", help="Concurrency levels (comma-separated).")
    parser.add_argument("--delay", type=float, default=0.2, help="Server answer delay in seconds.")
    parser.add_argument("--rounds", type=int, default=10, help="Requests per worker at each level (>= 3).")
    parser.add_argument("--check", action="store_true", help="Exit 1 if the speed-up at 16 is below 12x.")
    args = parser.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        most = max(levels) * args.rounds
        build_world(root, {"train": most // len(FLAVORS) + 1}, seed=0, size=32)
        rates: dict[int, float] = {}
        with LoopbackChatServer(delay=args.delay) as server:
            print(f"server delay {args.delay * 1000:.0f} ms; {args.rounds} requests per worker")
            print(f"{'concurrency':>11} {'requests':>8} {'seconds':>8} {'req/s':>8} {'speed-up':>8}")
            for level in levels:
                stats = measure(root, server.base_url, level, max(12, level * args.rounds))
                assert stats.items_failed == 0 and stats.retries == 0, stats.summary()
                rates[level] = stats.requests / stats.seconds
                speedup = rates[level] / rates[levels[0]]
                print(
                    f"{level:>11} {stats.requests:>8} {stats.seconds:>8.2f} {rates[level]:>8.1f} {speedup:>7.1f}x"
                )
    if args.check and 1 in rates and 16 in rates and rates[16] / rates[1] < 12:
        print(f"FAIL: speed-up at 16 is {rates[16] / rates[1]:.1f}x < 12x", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
