"""Gaussian splatting benchmark: forward and forward + backward of `render_gaussians` for N Gaussians on a
head-sized ellipsoid in front of one camera, 32 feature channels, optionally followed by the refine network
Psi (RefineUNet, 32 -> 64 wide, same resolution). Reported in ms per image against the GPHM v1 supplementary
figure: 31 ms per 512 px image, rasterize + Psi, on an RTX 4090.

On CPU only the torch backend runs (defaults: 10k Gaussians, 256 px, 2 timed repeats); on CUDA the torch and
gsplat backends run side by side (defaults: 100k Gaussians, 512 px) with their ratio.

    python benchmarks/bench_gaussian_render.py [--device cuda] [--gaussians N] [--resolution PX] [--no-refine]
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import timed  # noqa: E402
from datasets.capture.rig import look_at  # noqa: E402
from model.nets.refine import RefineUNet  # noqa: E402
from model.render.splat import available_backends, render_gaussians  # noqa: E402

PAPER_MS = 31.0  # GPHM v1 supplementary: rasterize + Psi, 512 px, RTX 4090
HEAD_AXES = (0.09, 0.12, 0.10)  # semi-axes in metres (as in bench_mesh_render.py)
CHANNELS = 32


def head_gaussians(n: int, device: str, seed: int = 0):
    """n Gaussians on the surface of a head-sized ellipsoid, scales ~ the mean neighbour spacing."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    axes = torch.tensor(HEAD_AXES)
    means = d / d.norm(dim=1, keepdim=True) * axes
    a, b, c = HEAD_AXES
    p = 1.6075  # Knud Thomsen's surface area approximation
    area = 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)
    spacing = math.sqrt(area / n)
    scales = spacing * (0.3 + 0.5 * torch.rand(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opacities = 0.3 + 0.7 * torch.rand(n, generator=g)
    colors = torch.rand(n, CHANNELS, generator=g)
    out = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors)
    return {k: v.to(device) for k, v in out.items()}, spacing


def camera(size: int, device: str, distance: float = 0.6, view_height: float = 0.3):
    """One camera `distance` in front of the face looking at the head centre; the frame spans `view_height`."""
    f = size * distance / view_height
    K = torch.tensor([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1]], dtype=torch.float32)
    E = torch.tensor(look_at(np.array([0.0, 0.0, distance]), np.zeros(3)), dtype=torch.float32)
    return K[None].to(device), E[None].to(device)



def bench_backend(backend: str, scene: dict, K, E, size: int, refine, device: str, repeat: int) -> dict:
    def render(leaves):
        return render_gaussians(leaves["means"], leaves["quats"], leaves["scales"], leaves["opacities"],
                                leaves["colors"], K, E, size, size, backend=backend)

    def forward():
        with torch.no_grad():
            return render(scene)

    def forward_psi():
        with torch.no_grad():
            image, _ = render(scene)
            return refine(image.permute(0, 3, 1, 2))

    def backward(with_psi: bool):
        leaves = {k: v.detach().requires_grad_(True) for k, v in scene.items()}
        image, alpha = render(leaves)
        out = refine(image.permute(0, 3, 1, 2)) if with_psi else image
        (out.square().mean() + alpha.mean()).backward()

    res = {"rasterize fwd": timed(forward, device, repeat),
           "rasterize fwd+bwd": timed(lambda: backward(False), device, repeat)}
    if refine is not None:
        res["rasterize + Psi fwd"] = timed(forward_psi, device, repeat)
        res["rasterize + Psi fwd+bwd"] = timed(lambda: backward(True), device, repeat)
    with torch.no_grad():
        _, alpha = render(scene)
    res["coverage"] = float((alpha > 0.5).float().mean())
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--gaussians", type=int, help="default 10_000 on CPU, 100_000 on CUDA")
    ap.add_argument("--resolution", type=int, help="square image size; default 256 on CPU, 512 on CUDA")
    ap.add_argument("--repeat", type=int, help="timed repeats after one warm-up; default 2 on CPU, 20 on CUDA")
    ap.add_argument("--no-refine", action="store_true", help="skip the refine network Psi")
    args = ap.parse_args()
    dev = args.device
    cuda = dev.startswith("cuda")
    n = args.gaussians or (100_000 if cuda else 10_000)
    size = args.resolution or (512 if cuda else 256)
    repeat = args.repeat or (20 if cuda else 2)
    backends = ["torch"] + (["gsplat"] if cuda and "gsplat" in available_backends() else [])
    torch.manual_seed(0)

    scene, spacing = head_gaussians(n, dev)
    K, E = camera(size, dev)
    refine = None if args.no_refine else RefineUNet(in_channels=CHANNELS, width=64, upsample=1).to(dev)
    print(f"device {dev}, torch threads {torch.get_num_threads()}, {n} Gaussians on a {HEAD_AXES} m ellipsoid "
          f"(spacing {spacing * 1000:.2f} mm), 1 camera {size}x{size} px, {CHANNELS} channels, {repeat} repeats, "
          f"Psi {'off' if refine is None else 'RefineUNet(32, width=64, upsample=1)'}, backends {backends}")
    if cuda and "gsplat" not in backends:
        print("gsplat not available: torch backend only")

    results = {b: bench_backend(b, scene, K, E, size, refine, "cuda" if cuda else dev, repeat) for b in backends}
    rows = [k for k in results[backends[0]] if k != "coverage"]
    head = f"{'ms per image':28s}" + "".join(f"{b:>12s}" for b in backends)
    if len(backends) == 2:
        head += f"{'torch/gsplat':>14s}"
    print(head)
    for r in rows:
        line = f"{r:28s}" + "".join(f"{results[b][r] * 1000:12.1f}" for b in backends)
        if len(backends) == 2:
            line += f"{results['torch'][r] / results['gsplat'][r]:13.1f}x"
        print(line)
    print(f"{'coverage (alpha > 0.5)':28s}" + "".join(f"{results[b]['coverage'] * 100:11.1f}%" for b in backends))

    if refine is not None:
        scale_note = "" if size == 512 else f" (measured at {size} px; the paper's figure is at 512 px)"
        print(f"paper (GPHM v1 supp.): rasterize + Psi {PAPER_MS:.0f} ms per 512 px image on an RTX 4090{scale_note}")
        for b in backends:
            ms = results[b]["rasterize + Psi fwd"] * 1000
            print(f"  {b:7s} rasterize + Psi fwd {ms:9.1f} ms = {ms / PAPER_MS:6.2f}x the paper's 31 ms")


if __name__ == "__main__":
    main()
