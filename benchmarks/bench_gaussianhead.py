"""The GaussianHead baseline on this machine: iterations per second at the tiny resolution (the full method
and its three ablations, on the rendered heads of model/head_shards.py) and at the paper's setting (10k
Gaussians, 512 px, a few iterations, extrapolated to the paper's ~3 h on an RTX 3090); then, where a trained
GPHM (runs/demo-gaussian) and the demo store exist, the equal-wall-clock comparison on a demo clip's frontal
view: a GPHM avatar fitted for --fit-iters + --finetune-iters, the baseline trained for the same seconds
(`max_seconds`), both evaluated on the same held-out frames at the GPHM's output resolution, in one table.

    python benchmarks/bench_gaussianhead.py [--model runs/demo-gaussian] [--store stores/demo.zarr]
        [--clip 001/EXP-1-jawopen] [--fit-iters 20] [--finetune-iters 100] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def frontal_view(store: str, clip: str) -> int:
    """The camera that looks most directly at the face (the camera centre furthest along the head's +z)."""
    import numpy as np

    from datasets.store import Store

    g = Store(store, mode="r").clip(clip)
    E = g["cameras/world_to_cam"][:].astype(np.float64)
    ok = g["fit/ok"][:]
    P = g["fit/pose"][int(np.flatnonzero(ok)[0])].astype(np.float64)
    centres = -np.einsum("vji,vj->vi", E[:, :3, :3], E[:, :3, 3])
    head = (centres - P[:3, 3]) @ P[:3, :3]  # in the head frame (y up, z out of the face)
    head /= np.linalg.norm(head, axis=1, keepdims=True)
    return int(np.argmax(head[:, 2]))


def speed(frames, config, work: str, name: str, iterations: int, device: str) -> float:
    """Iterations per second over `iterations` after two warm-up iterations."""
    from dataclasses import replace

    from model.gaussianhead.fit import BaselineConfig, GaussianHeadFit

    config = replace(config, iterations=iterations + 2, w_vgg=0.0)
    fit = GaussianHeadFit(BaselineConfig(out=os.path.join(work, name), checkpoint_every=0, device=device), config,
                          frames, log=False)
    stamps = []
    fit.progress = lambda phase, step, total, terms: stamps.append(time.perf_counter())
    fit.run()
    return (len(stamps) - 2) / (stamps[-1] - stamps[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(REPO, "runs", "demo-gaussian"))
    ap.add_argument("--store", default=os.path.join(REPO, "stores", "demo.zarr"))
    ap.add_argument("--clip", default="001/EXP-1-jawopen")
    ap.add_argument("--fit-iters", type=int, default=20)
    ap.add_argument("--finetune-iters", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=20, help="timed iterations per tiny configuration")
    ap.add_argument("--paper-iterations", type=int, default=3, help="timed iterations at the paper setting")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    from model.avatar.frames import AvatarFrames
    from model.gaussianhead.config import preset
    from model.head_shards import make_head_shards

    work = tempfile.mkdtemp(prefix="bench_gaussianhead_")
    make_head_shards(os.path.join(work, "heads"), frames=6)
    tiny_frames = AvatarFrames.load(os.path.join(work, "heads", "store.zarr"), "000/SEQ-0", view=0)
    print(f"device {args.device}, {torch.get_num_threads()} threads; tiny: rendered heads 64 px store, preset tiny "
          f"({preset('tiny').n_gaussians} Gaussians, {preset('tiny').resolution} px)")
    for name, kw in (("full", {}), ("w/o derivation", {"derivation": "none"}),
                     ("global rotation", {"derivation": "global"}), ("w/o tri-plane", {"use_triplane": False})):
        its = speed(tiny_frames, preset("tiny", densify_from=10 ** 9, **kw), work, name.replace(" ", "_").replace(
            "/", ""), args.iterations, args.device)
        print(f"  tiny {name:16s}: {its:6.1f} it/s")
    paper = preset("paper", densify_from=10 ** 9)
    its = speed(tiny_frames, paper, work, "paper", args.paper_iterations, args.device)
    print(f"  paper setting (10k Gaussians, 512 px, K=4, L=32, tri-plane 64..512): {its:.3f} it/s; 30k iterations "
          f"would take {30000 / its / 3600:.1f} h here (the paper: ~3 h on an RTX 3090)")

    if not (os.path.exists(os.path.join(args.model, "checkpoint.pt")) and os.path.exists(args.store)):
        print(f"equal-time comparison skipped: no trained GPHM at {args.model} or no store at {args.store}")
        return
    from model.avatar.fit import AvatarConfig, AvatarFit
    from model.gaussianhead.evaluate import compare, format_table
    from model.gaussianhead.fit import BaselineConfig, GaussianHeadFit

    view = frontal_view(args.store, args.clip)
    frames = AvatarFrames.load(args.store, args.clip, view=view)
    print(f"equal time: {args.store} clip {args.clip}, frontal view {view}: {len(frames.train)} frames trained on, "
          f"{len(frames.heldout)} held out")
    gphm = os.path.join(work, "gphm")
    fit = AvatarFit(AvatarConfig(model=args.model, out=gphm, fit_iters=args.fit_iters,
                                 finetune_iters=args.finetune_iters, few_shot="off", checkpoint_every=0,
                                 image_every=0, device=args.device), frames, log=False)
    start = time.perf_counter()
    fit.run()
    seconds = time.perf_counter() - start
    R = fit.gphm.config.output_resolution
    outs = [gphm]
    for name, kw in (("gaussianhead", {}), ("gaussianhead_noder", {"derivation": "none"})):
        out = os.path.join(work, name)
        config = preset("paper", resolution=R, w_vgg=0.0, **kw)
        GaussianHeadFit(BaselineConfig(out=out, max_seconds=seconds, checkpoint_every=0, device=args.device), config,
                        frames, log=False).run()
        outs.append(out)
    faces = None
    try:
        from pipeline.backends.face_distance import FaceDistance

        faces = FaceDistance()
    except Exception as e:  # noqa: BLE001 - the table is still useful without it
        print(f"(no Face Distance: {e})")
    print(format_table(compare(outs, args.device, faces)))
    print("(the baselines' schedules span the paper's 30k iterations; stopped at the GPHM avatar's wall-clock time)")


if __name__ == "__main__":
    main()
