"""One GPU check of the whole CUDA side, in one short run, printed as ONE table (check | result | figure |
reference). Written for a single try on a lent GPU: every check is isolated (an exception becomes a FAIL row
with its message, and the run goes on), every check is skipped rather than started when the time budget
would not cover it, and the table is printed (and written with --out) even when checks fail.

    python benchmarks/gpu_check.py                    # CUDA, full sizes (paper presets at 512 px): < 8 minutes
    python benchmarks/gpu_check.py --quick            # smaller sizes (tiny presets)
    python benchmarks/gpu_check.py --device cpu --quick --out gpu-check.md   # the same checks on the CPU, tiny
    python benchmarks/gpu_check.py --only render,stage2 --budget 300         # a rerun of some checks

Checks, in this order (the budget drops the last ones first):
    env        torch, CUDA device, gsplat version, nvcc
    build      gsplat 1.5.3 ships no compiled kernels: its first CUDA call JIT-compiles them (nvcc, minutes).
               This builds them in a subprocess with a time limit (MAX_JOBS = CPU count) so that a hung or
               failed build is a FAIL row; later processes load the cached build (~/.cache/torch_extensions).
    splat      gsplat against the pure-PyTorch rasterizer: images, alphas and gradients (means, quats, scales,
               opacities, colours) on a few hundred Gaussians; one batched gsplat call against per-image calls
    batched    render_gaussians_batched (torch backend) against per-scene render_gaussians: exactly equal
    mesh       nvdiffrast (and pytorch3d) against the torch mesh rasterizer where installed; the torch mesh
               rasterizer on CUDA against itself on the CPU
    tests      pytest on the tests marked `gpu` (pyproject.toml), in a subprocess with a time limit
    render     100k Gaussians at 512 px: forward, forward + backward, + the refine network Psi, and a batch of 8
               in one call, against the paper's 31 ms per image (RTX 4090)
    stage1     the guiding trainer's train_step (paper preset, 512 px, 8 frames x 4 views): median seconds
               and peak GPU memory; its checkpoint starts stage 2
    stage2     the Gaussian trainer's train_step (paper preset, 512 px, 8 images)
    amp2, amp1 the same trainers with TrainConfig.amp (bf16 autocast on CUDA): step time and the first step's
               loss against amp off (same weights, same batch)

Exit code 0 when every check that ran passed, 1 otherwise. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

PASS, FAIL, INFO = "pass", "FAIL", "info"
PAPER_MS = 31.0  # GPHM v1 supplementary: one 512 px image (rasterize + Psi) on an RTX 4090
GRAD_KEYS = ("means", "quats", "scales", "opacities", "colors")


class Skip(Exception):
    """A check that cannot run here (no CUDA, not installed, an earlier check it needs failed)."""


@dataclass
class Row:
    check: str
    result: str
    figure: str = ""
    reference: str = ""


@dataclass
class Sizes:
    """What each check runs at; see `sizes_for`."""

    preset: str  # model preset of both trainers
    guiding_overrides: dict  # on top of the preset (CPU only: shorter set-up)
    shards: dict  # make_head_shards arguments
    warmup: int  # untimed train steps
    steps: int  # timed train steps
    splat_n: int  # Gaussians of the cross-backend scene
    splat_px: int  # its image size
    render_n: int  # Gaussians of the render benchmark
    render_px: int
    render_repeat: int
    build_timeout: int  # seconds for the gsplat JIT build
    test_timeout: int  # seconds for the pytest run


def sizes_for(device: str, quick: bool) -> Sizes:
    """Full CUDA: the paper presets at 512 px. --quick: the tiny presets. CPU: tiny presets, small images and a
    shortened f_mean initialisation (what a CPU test can afford; the code path is the same)."""
    heads = {"subjects": 2, "frames": 4, "views": 6, "res": 128, "holdout_views": "1"}
    if device == "cuda" and not quick:  # 8 frames x 6 training views: a paper batch (8 frames x 4 views)
        return Sizes(preset="paper", guiding_overrides={}, shards={**heads, "frames": 8, "views": 8, "res": 512,
                                                                    "holdout_views": "2"},
                     warmup=2, steps=5, splat_n=400, splat_px=128, render_n=100_000, render_px=512,
                     render_repeat=20, build_timeout=420, test_timeout=240)
    if device == "cuda":
        return Sizes(preset="tiny", guiding_overrides={}, shards=heads, warmup=1, steps=3, splat_n=200, splat_px=64,
                     render_n=100_000, render_px=512, render_repeat=5, build_timeout=420, test_timeout=180)
    if not quick:
        return Sizes(preset="tiny", guiding_overrides={}, shards=heads, warmup=1, steps=3, splat_n=200, splat_px=64,
                     render_n=10_000, render_px=256, render_repeat=2, build_timeout=60, test_timeout=180)
    return Sizes(preset="tiny", guiding_overrides={"init_steps": 60, "grid_resolution": 24, "render_resolution": 64,
                                                   "output_resolution": 64},
                 shards={**heads, "views": 5, "res": 64}, warmup=0, steps=1, splat_n=60, splat_px=32,
                 render_n=500, render_px=32, render_repeat=1, build_timeout=60, test_timeout=120)


@dataclass
class Context:
    device: torch.device
    quick: bool
    sizes: Sizes
    deadline: float
    work: str
    rows: list[Row] = field(default_factory=list)
    gsplat_built: bool | None = None  # None: not tried
    shards: str | None = None
    stage1_checkpoint: str | None = None
    baseline: dict = field(default_factory=dict)  # stage -> (seconds per step, first loss, peak GiB)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def log(msg: str) -> None:
    print(f"[gpu-check] {msg}", file=sys.stderr, flush=True)


def need_cuda(ctx: Context) -> None:
    if not ctx.cuda:
        raise Skip("no CUDA")


def need_gsplat(ctx: Context) -> None:
    need_cuda(ctx)
    if ctx.gsplat_built is False:
        raise Skip("gsplat kernels did not build (see the build row)")


# ------------------------------------------------------------------------------------------------ helpers
def run_subprocess(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int | None, str]:
    """-> (exit code or None on timeout, stdout + stderr). The child runs in its own process group, so a timeout
    also ends what it started (nvcc, ninja, pytest workers)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out or ""


def tail(text: str, n: int = 160) -> str:
    """The last meaningful line of a log, shortened: what goes into a table cell."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[-n:]


def median_seconds(fn: Callable[[], object], ctx: Context, repeat: int, warmup: int = 1) -> float:
    """Median wall seconds of fn() (synchronised on CUDA) over `repeat` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    ctx.sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        ctx.sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_gib(ctx: Context) -> float:
    return torch.cuda.max_memory_allocated(ctx.device) / 2**30 if ctx.cuda else float("nan")


def reset_peak(ctx: Context) -> None:
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)


def release(ctx: Context) -> None:
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------- env, build
def check_env(ctx: Context) -> list[Row]:
    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    if torch.version.cuda:
        parts.append(f"CUDA {torch.version.cuda}")
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        parts.append(f"{props.name} ({props.total_memory / 2**30:.0f} GiB)")
    spec = importlib.util.find_spec("gsplat")
    if spec is None:
        parts.append("gsplat not installed")
    else:
        from gsplat.version import __version__ as gsplat_version

        parts.append(f"gsplat {gsplat_version}")
    parts.append(f"nvcc {shutil.which('nvcc') or 'not on PATH'}")
    parts.append(f"{os.cpu_count()} CPUs")
    return [Row("environment", INFO, ", ".join(parts), "")]


BUILD_CODE = ("import time; t = time.perf_counter(); from gsplat.cuda._backend import _C; "
              "print('GSPLAT_EXTENSION', _C is not None, round(time.perf_counter() - t, 1))")


def check_build(ctx: Context) -> list[Row]:
    """The JIT build of gsplat's kernels, alone in a subprocess with a time limit."""
    need_cuda(ctx)
    ref = "gsplat 1.5.3 wheel: CUDA sources only, JIT-compiled on first use"
    if importlib.util.find_spec("gsplat") is None:
        ctx.gsplat_built = False
        return [Row("gsplat kernels (JIT build)", FAIL, "gsplat is not installed", ref)]
    env = dict(os.environ)
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 8))
    timeout = max(30.0, min(ctx.sizes.build_timeout, ctx.remaining() - 90))
    start = time.perf_counter()
    code, out = run_subprocess([sys.executable, "-c", BUILD_CODE], timeout, env)
    wall = time.perf_counter() - start
    found = re.search(r"GSPLAT_EXTENSION (True|False) ([\d.]+)", out)
    if code is None:
        ctx.gsplat_built = False
        return [Row("gsplat kernels (JIT build)", FAIL, f"not done after {timeout:.0f} s: {tail(out)}", ref)]
    if code != 0 or not found or found.group(1) != "True":
        ctx.gsplat_built = False
        why = "no CUDA toolkit found (nvcc)" if found and found.group(1) == "False" else tail(out)
        log(out[-4000:])
        return [Row("gsplat kernels (JIT build)", FAIL, f"exit {code}: {why}", ref)]
    from gsplat.cuda._backend import _C  # the cached build: a quick load

    ctx.gsplat_built = _C is not None
    figure = f"ready in {wall:.0f} s (MAX_JOBS={env['MAX_JOBS']}; cached for later processes)"
    return [Row("gsplat kernels (JIT build)", PASS if ctx.gsplat_built else FAIL, figure, ref)]


# ----------------------------------------------------------------------------------------- splat checks
def _cameras(n_cams: int, size: int, f: float, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """n_cams cameras 3 units from the origin, looking at it, spread over +-0.5 rad -> K [C,3,3], E [C,4,4]."""
    import numpy as np

    from datasets.capture.rig import look_at

    K = torch.tensor([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1]], dtype=dtype)
    angles = np.linspace(-0.5, 0.5, n_cams) if n_cams > 1 else [0.0]
    E = [look_at(np.array([3 * np.sin(a), 0.3 * a, 3 * np.cos(a)]), np.zeros(3)) for a in angles]
    return K[None].repeat(n_cams, 1, 1), torch.tensor(np.stack(E), dtype=dtype)


def agreement_scene(n: int, d: int, n_cams: int, size: int, seed: int, margin: float = 2e-3) -> dict:
    """Gaussians with opacities <= 0.3 (where both footprint rules select the same pairs: model/render/splat.py),
    without those having a pixel within `margin` (in Mahalanobis^2) of the alpha = 1/255 contour, where float32
    round-off could flip a discrete decision. CPU float32 tensors; the filter runs in float64."""
    from model.render.gaussians import project_gaussians

    g = torch.Generator().manual_seed(seed)
    K, E = _cameras(n_cams, size, 80.0 * size / 48)
    scene = {"means": torch.rand(n, 3, generator=g) - 0.5, "quats": torch.randn(n, 4, generator=g),
             "scales": 0.01 + 0.05 * torch.rand(n, 3, generator=g),
             "opacities": 0.05 + 0.25 * torch.rand(n, generator=g), "colors": torch.rand(n, d, generator=g),
             "K": K, "world_to_cam": E}
    s = {k: v.double() for k, v in scene.items()}
    m2, con, _, radii = project_gaussians(s["means"], s["quats"], s["scales"], s["K"], s["world_to_cam"],
                                          width=size, height=size)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    keep = torch.ones(n, dtype=torch.bool)
    q_thr = 2 * torch.log(255.0 * s["opacities"])
    for c in range(n_cams):  # one camera at a time bounds the memory at N x H x W
        dx = xs.reshape(1, -1) - m2[c, :, 0:1]
        dy = ys.reshape(1, -1) - m2[c, :, 1:2]
        a, b, cc = con[c, :, 0:1], con[c, :, 1:2], con[c, :, 2:3]
        q = a * dx * dx + 2 * b * dx * dy + cc * dy * dy
        keep &= ~(((q - q_thr[:, None]).abs() < margin).any(1) & (radii[c] > 0))
    return {k: v if k in ("K", "world_to_cam") else v[keep] for k, v in scene.items()}


def _splat_args(s: dict, size: int) -> tuple:
    return (s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["K"], s["world_to_cam"], size, size)


def _render_and_grads(scene: dict, size: int, backend: str, background, per_scene: bool = False, seed: int = 1):
    """-> image, alpha, {name: gradient} of a fixed random linear loss of image and alpha. A batched scene
    (means [B, N, 3], K [B, C, 3, 3], ...) goes through render_gaussians_batched, or with per_scene through one
    render_gaussians call per scene, stacked (the same loss either way)."""
    from model.render.splat import render_gaussians, render_gaussians_batched

    leaves = {k: v.detach().clone().requires_grad_(k in GRAD_KEYS) for k, v in scene.items()}
    if per_scene:
        parts = [render_gaussians(*_splat_args({k: v[b] for k, v in leaves.items()}, size), backend=backend,
                                  background=background) for b in range(leaves["means"].shape[0])]
        image, alpha = torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts])
    else:
        fn = render_gaussians_batched if leaves["means"].dim() == 3 else render_gaussians
        image, alpha = fn(*_splat_args(leaves, size), backend=backend, background=background)
    g = torch.Generator().manual_seed(seed)
    w_img = torch.randn(image.shape, generator=g).to(image)
    w_alpha = torch.randn(alpha.shape, generator=g).to(alpha)
    ((image * w_img).sum() + (alpha * w_alpha).sum()).backward()
    return image.detach(), alpha.detach(), {k: leaves[k].grad for k in GRAD_KEYS}


def _scene_batch(n_scenes: int, n: int, d: int, size: int, seed: int, device: torch.device) -> dict:
    """n_scenes agreement scenes, each its own Gaussians and cameras, cut to a common N -> dict of [B, ...]."""
    scenes = [agreement_scene(n, d, 2, size, seed=seed + b) for b in range(n_scenes)]
    for b, s in enumerate(scenes):
        s["world_to_cam"] = s["world_to_cam"].clone()
        s["world_to_cam"][:, :3, 3] += 0.05 * b  # other cameras per scene too
    m = min(s["means"].shape[0] for s in scenes)
    return {k: torch.stack([s[k] if k in ("K", "world_to_cam") else s[k][:m] for s in scenes]).to(device)
            for k in scenes[0]}


def _batched_vs_per_scene(batch: dict, size: int, backend: str, background) -> tuple[float, float]:
    """-> (max abs d of images and alphas, max relative |d| of the gradients): one batched call against one
    call per scene."""
    img_b, alpha_b, grads_b = _render_and_grads(batch, size, backend, background)
    img_s, alpha_s, grads_s = _render_and_grads(batch, size, backend, background, per_scene=True)
    d_img = float(torch.maximum((img_b - img_s).abs().max(), (alpha_b - alpha_s).abs().max()))
    return d_img, max(_rel(grads_b[k], grads_s[k]) for k in GRAD_KEYS)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b| (Frobenius norms)."""
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check_splat(ctx: Context) -> list[Row]:
    need_gsplat(ctx)
    z = ctx.sizes
    d, dev = 32, ctx.device
    scene = {k: v.to(dev) for k, v in agreement_scene(z.splat_n, d, 2, z.splat_px, seed=0).items()}
    n = scene["means"].shape[0]
    bg = torch.linspace(0, 1, d, device=dev)
    img_t, alpha_t, grads_t = _render_and_grads(scene, z.splat_px, "torch", bg)
    img_g, alpha_g, grads_g = _render_and_grads(scene, z.splat_px, "gsplat", bg)
    what = f"N={n}, 2 cams {z.splat_px} px, {d} ch, opacity <= 0.3"
    di, da = (img_t - img_g).abs(), (alpha_t - alpha_g).abs()
    ok_img = float(di.max()) < 5e-4 and float(da.max()) < 5e-4 and 0.3 < float(alpha_t.max())
    rows = [Row("gsplat vs torch: image, alpha", PASS if ok_img else FAIL,
                f"max abs d image {float(di.max()):.1e}, alpha {float(da.max()):.1e}; mean {float(di.mean()):.1e} "
                f"({what}; alpha max {float(alpha_t.max()):.2f})",
                "< 5e-4 (float32; the test asks < 1e-4)")]
    rels = {k: _rel(grads_g[k], grads_t[k]) for k in GRAD_KEYS}
    ok_grad = all(r < 1e-3 for r in rels.values()) and all(float(grads_t[k].norm()) > 0 for k in GRAD_KEYS)
    rows.append(Row("gsplat vs torch: gradients", PASS if ok_grad else FAIL,
                    "rel d " + ", ".join(f"{k} {r:.1e}" for k, r in rels.items()), "< 1e-3 relative"))

    # one batched call against per-image calls: B scenes, each its own Gaussians and cameras
    B = 4
    d_img, d_grad = _batched_vs_per_scene(_scene_batch(B, z.splat_n, d, z.splat_px, 1, dev), z.splat_px, "gsplat", bg)
    ok = d_img < 1e-6 and d_grad < 1e-5
    rows.append(Row("gsplat batched call vs per-image calls", PASS if ok else FAIL,
                    f"max abs d image/alpha {d_img:.1e}, max rel d gradient {d_grad:.1e} ({B} scenes x 2 cams)",
                    "< 1e-6, < 1e-5 (same kernels)"))
    return rows


def check_batched_torch(ctx: Context) -> list[Row]:
    """The Gaussian model's batched render on the torch path equals per-scene calls exactly (any device)."""
    d, size, B = 8, 32, 3
    bg = torch.linspace(0, 1, d, device=ctx.device)
    d_img, d_grad = _batched_vs_per_scene(_scene_batch(B, 60, d, size, 10, ctx.device), size, "torch", bg)
    return [Row("batched render (torch) vs per-scene calls", PASS if d_img == 0 and d_grad == 0 else FAIL,
                f"max abs d image/alpha {d_img:.1e}, gradients {d_grad:.1e} ({B} scenes x 2 cams {size} px, "
                f"{ctx.device.type})", "0 (bit-identical)")]


# ------------------------------------------------------------------------------------------------- mesh
def _mesh_scene(device: torch.device):
    """A head-sized ellipsoid seen by a ring of cameras -> verts [N,3], faces [F,3], K [C,3,3], E [C,4,4]."""
    import numpy as np

    from datasets.capture.rig import make_rig
    from datasets.synthhead.proxies import ellipsoid

    v, f = ellipsoid((0.0, 0.0, 0.0), (0.09, 0.12, 0.1), 48, 64)
    rig = make_rig(256, 384)[::4]
    K = torch.tensor(np.stack([c.K for c in rig]), dtype=torch.float32, device=device)
    E = torch.tensor(np.stack([c.world_to_cam for c in rig]), dtype=torch.float32, device=device)
    return (torch.tensor(v, dtype=torch.float32, device=device), torch.tensor(f, dtype=torch.long, device=device),
            K, E)


def _mesh_agreement(a, b, faces, verts) -> tuple[float, float]:
    """-> (share of pixels with the same visible face, max abs d of 32 interpolated channels where they agree)."""
    from model.render.mesh import interpolate

    attrs = torch.randn(verts.shape[0], 32, generator=torch.Generator().manual_seed(0)).to(verts)
    same = a.mask & b.mask & (a.face_id == b.face_id)
    diff = (interpolate(attrs, faces, a) - interpolate(attrs, faces, b))[same]
    return float((a.face_id == b.face_id).float().mean()), float(diff.abs().max()) if diff.numel() else 0.0


def check_mesh(ctx: Context) -> list[Row]:
    need_cuda(ctx)
    from model.render.mesh import Rasterized, rasterize

    verts, faces, K, E = _mesh_scene(ctx.device)
    ref_cuda = rasterize(verts, faces, K, E, 384, 256, backend="torch")
    on_cpu = rasterize(verts.cpu(), faces.cpu(), K.cpu(), E.cpu(), 384, 256, backend="torch")
    on_cpu = Rasterized(**{f.name: getattr(on_cpu, f.name).to(ctx.device) for f in dataclasses.fields(on_cpu)})
    share, diff = _mesh_agreement(ref_cuda, on_cpu, faces, verts)
    rows = [Row("mesh rasterizer (torch) CUDA vs CPU", PASS if share > 0.999 and diff < 1e-4 else FAIL,
                f"same face {100 * share:.3f}% of pixels, max abs d attributes {diff:.1e} ({K.shape[0]} cams 256x384)",
                "> 99.9%, < 1e-4")]
    if importlib.util.find_spec("nvdiffrast") is None:
        rows.append(Row("nvdiffrast vs torch mesh rasterizer", "skipped: not installed", "", "> 99.9%, < 1e-4"))
    else:
        nv = rasterize(verts, faces, K, E, 384, 256, backend="nvdiffrast")
        share, diff = _mesh_agreement(ref_cuda, nv, faces, verts)
        rows.append(Row("nvdiffrast vs torch mesh rasterizer", PASS if share > 0.999 and diff < 1e-4 else FAIL,
                        f"same face {100 * share:.3f}% of pixels, max abs d attributes {diff:.1e}", "> 99.9%, < 1e-4"))
    if importlib.util.find_spec("pytorch3d") is None:
        rows.append(Row("pytorch3d vs torch mesh rasterizer", "skipped: not installed", "", ""))
    else:
        rows.append(Row("pytorch3d vs torch mesh rasterizer", "skipped: no pytorch3d path in model/render/mesh.py",
                        "installed, nothing to compare", ""))
    return rows


# ------------------------------------------------------------------------------------------------ tests
def gpu_test_files() -> list[str]:
    """The test files holding tests marked `gpu` (collecting only those keeps the run short and independent of
    the CPU-only packages other test files import)."""
    found = []
    for base, _, files in os.walk(os.path.join(ROOT, "tests")):
        for name in sorted(files):
            if name.startswith("test_") and name.endswith(".py"):
                path = os.path.join(base, name)
                with open(path, encoding="utf-8") as fh:
                    if "pytest.mark.gpu" in fh.read():
                        found.append(os.path.relpath(path, ROOT))
    return sorted(found)


def check_tests(ctx: Context) -> list[Row]:
    files = gpu_test_files()
    ref = "tests marked gpu: " + ", ".join(os.path.basename(f) for f in files)
    if not files:
        return [Row("CUDA tests (pytest -m gpu)", FAIL, "no test is marked gpu", ref)]
    timeout = max(30.0, min(ctx.sizes.test_timeout, ctx.remaining() - 30))
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rfEs", *files]
    start = time.perf_counter()
    code, out = run_subprocess(cmd, timeout)
    wall = time.perf_counter() - start
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", out)}
    errors = counts.get("error", 0) + counts.get("errors", 0)
    figure = (f"{counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, {errors} errors, "
              f"{counts.get('skipped', 0)} skipped in {wall:.0f} s")
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.MULTILINE)
    if failed:
        figure += "; " + ", ".join(f.split("::")[-1] for f in failed[:4])
    if code is None:
        return [Row("CUDA tests (pytest -m gpu)", FAIL, f"not done after {timeout:.0f} s: {tail(out)}", ref)]
    ok = code == 0 and not counts.get("failed") and not errors
    if not ok:
        log(out[-6000:])
    if ctx.cuda and ok and not counts.get("passed"):
        ok, figure = False, figure + " (nothing ran on CUDA)"
    return [Row("CUDA tests (pytest -m gpu)", PASS if ok else FAIL, figure, ref)]


# ----------------------------------------------------------------------------------------------- render
def check_render(ctx: Context) -> list[Row]:
    """N Gaussians on a head-sized ellipsoid, 32 channels, one camera; the backend the model would use."""
    from benchmarks.bench_gaussian_render import CHANNELS, camera, head_gaussians
    from model.nets.refine import RefineUNet
    from model.render.splat import render_gaussians, render_gaussians_batched

    z, dev = ctx.sizes, ctx.device
    backend = "gsplat" if ctx.cuda and ctx.gsplat_built else "torch"
    scene, _ = head_gaussians(z.render_n, str(dev))
    K, E = camera(z.render_px, str(dev))
    size = z.render_px
    psi = RefineUNet(in_channels=CHANNELS, width=64, upsample=1).to(dev)

    def render(s):
        return render_gaussians(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], K, E, size, size,
                                backend=backend)

    def forward():
        with torch.no_grad():
            return render(scene)

    def forward_psi():
        with torch.no_grad():
            return psi(render(scene)[0].permute(0, 3, 1, 2))

    def backward():
        leaves = {k: v.detach().requires_grad_(True) for k, v in scene.items()}
        image, alpha = render(leaves)
        (image.square().mean() + alpha.mean()).backward()

    B = 8 if ctx.cuda else 2
    batch = {k: v[None].expand(B, *v.shape).contiguous() for k, v in scene.items()}
    Kb, Eb = K[None].expand(B, -1, -1, -1), E[None].expand(B, -1, -1, -1)

    def forward_batch():
        with torch.no_grad():
            return render_gaussians_batched(batch["means"], batch["quats"], batch["scales"], batch["opacities"],
                                            batch["colors"], Kb, Eb, size, size, backend=backend)

    r, w = z.render_repeat, 2 if ctx.cuda else 1
    what = f"{z.render_n / 1000:g}k Gaussians {size} px, {backend}"
    fwd = median_seconds(forward, ctx, r, warmup=w)
    bwd = median_seconds(backward, ctx, max(1, r // 2), warmup=1)
    fwd_psi = median_seconds(forward_psi, ctx, r, warmup=w)
    fwd_b = median_seconds(forward_batch, ctx, max(1, r // 4), warmup=1) / B
    coverage = float((forward()[1] > 0.5).float().mean())
    paper = f"{PAPER_MS:.0f} ms per 512 px image incl. Psi, RTX 4090"
    return [
        Row(f"render {what}: fwd", PASS, f"{fwd * 1e3:.2f} ms/image (median of {r}; coverage {coverage:.0%})", paper),
        Row(f"render {what}: fwd+bwd", PASS, f"{bwd * 1e3:.2f} ms/image", ""),
        Row(f"render {what}: fwd + Psi", PASS, f"{fwd_psi * 1e3:.2f} ms/image = {fwd_psi * 1e3 / PAPER_MS:.2f}x the paper",
            paper),
        Row(f"render {what}: batch of {B}, one call", PASS, f"{fwd_b * 1e3:.2f} ms/image (fwd)", ""),
    ]


# ----------------------------------------------------------------------------------------------- trainers
def ensure_shards(ctx: Context) -> str:
    """A small shard set of rendered heads (model/head_shards.py) at the sizes' resolution, made once."""
    if ctx.shards is None:
        from model.head_shards import make_head_shards

        start = time.perf_counter()
        ctx.shards = make_head_shards(os.path.join(ctx.work, "heads"), **ctx.sizes.shards)
        log(f"shard set {ctx.sizes.shards} made in {time.perf_counter() - start:.1f} s")
    return ctx.shards


def train_config(ctx: Context, out: str, **extra):
    from model.train.config import TrainConfig

    return TrainConfig(shards=ensure_shards(ctx), out=os.path.join(ctx.work, out), preset=ctx.sizes.preset,
                       init=extra.pop("init", ""), device=str(ctx.device), steps=10**9, eval_every=0,
                       checkpoint_every=0, image_every=0, log_every=10**9, **extra)


def time_train_steps(ctx: Context, trainer) -> dict:
    """Warm-up then timed `train_step`s on the loader's batches (fetching a batch is not timed) -> seconds per
    step (median), the first step's loss (initial weights, first batch), peak GPU memory, the fine image dtype."""
    batches = iter(trainer.loader)
    reset_peak(ctx)
    times, losses, out = [], [], None
    for _ in range(ctx.sizes.warmup + ctx.sizes.steps):
        batch = next(batches)
        ctx.sync()
        start = time.perf_counter()
        terms, out, _ = trainer.train_step(batch)
        ctx.sync()
        times.append(time.perf_counter() - start)
        losses.append(float(terms.total.detach()))
    if not all(math.isfinite(v) for v in losses):
        raise FloatingPointError(f"non-finite losses {losses}")
    return {"seconds": statistics.median(times[ctx.sizes.warmup:]), "first_loss": losses[0], "peak": peak_gib(ctx),
            "fine_dtype": str(out.fine.dtype).replace("torch.", ""), "steps": ctx.sizes.steps}


def _step_figure(m: dict, what: str) -> str:
    mem = f", peak {m['peak']:.1f} GiB" if math.isfinite(m["peak"]) else ""
    return f"{m['seconds']:.3f} s/step (median of {m['steps']}){mem}; {what}"


def _guiding_trainer(ctx: Context, out: str, **extra):
    from datasets.config import override
    from model.guiding.config import preset
    from model.train.guiding_trainer import GuidingTrainer

    config = override(preset(ctx.sizes.preset), ctx.sizes.guiding_overrides)
    return GuidingTrainer(train_config(ctx, out, **extra), config, log=False)


class _StageOneInitOnDevice:
    """Within the block, stage 2's start from stage 1 (`gaussian_init.from_guiding`: f_mean evaluated on every
    vertex of the tet grid, 256^3 in the paper preset, then DMTet) runs on the check's device instead of the
    CPU the trainer builds it on: minutes of CPU work become about a second. The result is the same up to
    float round-off (the points come back to the CPU as the trainer expects)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        from model.gaussian import init as gaussian_init

        self.module, self.original = gaussian_init, gaussian_init.from_guiding
        original, device = self.original, self.device

        def from_guiding(guiding, config):
            guiding.to(device)
            try:
                return original(guiding, config)
            finally:
                guiding.to("cpu")

        gaussian_init.from_guiding = from_guiding
        return self

    def __exit__(self, *exc):
        self.module.from_guiding = self.original
        return False


def _gaussian_trainer(ctx: Context, out: str, **extra):
    from model.gaussian.config import preset
    from model.train.gaussian_trainer import GaussianTrainer

    if ctx.stage1_checkpoint is None:
        raise Skip("needs the stage-1 checkpoint of the stage1 check")
    config = preset(ctx.sizes.preset)
    if ctx.cuda and not ctx.gsplat_built:
        config.backend = "torch"
    with _StageOneInitOnDevice(ctx.device):
        return GaussianTrainer(train_config(ctx, out, init=ctx.stage1_checkpoint, **extra), config, log=False)


def check_stage1(ctx: Context) -> list[Row]:
    start = time.perf_counter()
    trainer = _guiding_trainer(ctx, "stage1")
    setup = time.perf_counter() - start
    m = time_train_steps(ctx, trainer)
    trainer.save_checkpoint()  # stage 2 starts from it
    ctx.stage1_checkpoint = trainer.path
    ctx.baseline["guiding"] = m
    c = trainer.config
    what = (f"{c.batch_size} frames x {c.views} views {c.render_resolution} px, grid {c.grid_resolution}^3, "
            f"{ctx.sizes.preset}; set-up {setup:.0f} s")
    return [Row(f"stage 1 train_step ({ctx.sizes.preset})", PASS, _step_figure(m, what),
                "paper: 8 RTX 4090, about 1 day (no step time given)")]


def check_stage2(ctx: Context) -> list[Row]:
    start = time.perf_counter()
    trainer = _gaussian_trainer(ctx, "stage2")
    setup = time.perf_counter() - start
    m = time_train_steps(ctx, trainer)
    ctx.baseline["gaussian"] = m
    c, g = trainer.config, trainer.gaussian_config
    what = (f"{g.batch_size} images {c.render_resolution} px, {trainer.model.n_points / 1000:.0f}k Gaussians, "
            f"backend {g.backend}, {ctx.sizes.preset}; set-up {setup:.0f} s")
    return [Row(f"stage 2 train_step ({ctx.sizes.preset})", PASS, _step_figure(m, what),
                "paper: 8 RTX 4090, 7 days (no step time given)")]


def _amp_row(ctx: Context, stage: str, build: Callable) -> list[Row]:
    from model.train.config import TrainConfig

    name = f"amp {'stage 1' if stage == 'guiding' else 'stage 2'} (bf16 autocast)"
    ref = "loss within 5% of fp32 on the first step"
    if "amp" not in {f.name for f in dataclasses.fields(TrainConfig)}:
        return [Row(name, "skipped: TrainConfig has no amp field yet", "", ref)]
    if not ctx.cuda:
        raise Skip("bf16 autocast is CUDA-only (the trainer refuses amp elsewhere)")
    base = ctx.baseline.get(stage)
    if base is None:
        raise Skip(f"needs the {stage} step time (its check failed or was skipped)")
    m = build(amp=True)
    rel = abs(m["first_loss"] - base["first_loss"]) / max(abs(base["first_loss"]), 1e-12)
    mem = f", peak {base['peak']:.1f} -> {m['peak']:.1f} GiB" if ctx.cuda else ""
    figure = (f"{base['seconds']:.3f} -> {m['seconds']:.3f} s/step ({base['seconds'] / m['seconds']:.2f}x){mem}; "
              f"first loss {base['first_loss']:.5f} vs {m['first_loss']:.5f} (rel {rel:.1e}); "
              f"fine image {m['fine_dtype']}")
    if not ctx.cuda:
        figure += " (amp applies on CUDA only)"
    return [Row(name, PASS if rel < 0.05 else FAIL, figure, ref)]


def check_amp2(ctx: Context) -> list[Row]:
    def build(**extra):
        trainer = _gaussian_trainer(ctx, "stage2-amp", **extra)
        return time_train_steps(ctx, trainer)

    return _amp_row(ctx, "gaussian", build)


def check_amp1(ctx: Context) -> list[Row]:
    def build(**extra):
        trainer = _guiding_trainer(ctx, "stage1-amp", **extra)
        return time_train_steps(ctx, trainer)

    return _amp_row(ctx, "guiding", build)


# -------------------------------------------------------------------------------------------------- main
@dataclass
class Check:
    key: str
    title: str  # the row's name when the check fails as a whole
    fn: Callable[[Context], list[Row]]
    estimate: Callable[[Context], float]  # seconds it needs, to decide whether to start it


def _est(cuda_full: float, other: float) -> Callable[[Context], float]:
    return lambda ctx: cuda_full if ctx.cuda and not ctx.quick else other


CHECKS = [
    Check("env", "environment", check_env, _est(1, 1)),
    Check("build", "gsplat kernels (JIT build)", check_build, _est(60, 60)),
    Check("splat", "gsplat vs torch", check_splat, _est(15, 5)),
    Check("batched", "batched render (torch) vs per-scene calls", check_batched_torch, _est(5, 2)),
    Check("mesh", "mesh rasterizers", check_mesh, _est(10, 5)),
    Check("tests", "CUDA tests (pytest -m gpu)", check_tests, _est(60, 10)),
    Check("render", "render benchmark", check_render, _est(20, 3)),
    Check("stage1", "stage 1 train_step", check_stage1, _est(90, 5)),
    Check("stage2", "stage 2 train_step", check_stage2, _est(60, 4)),
    Check("amp2", "amp stage 2 (bf16 autocast)", check_amp2, _est(45, 3)),
    Check("amp1", "amp stage 1 (bf16 autocast)", check_amp1, _est(90, 4)),
]


# what a check needs run before it (the gsplat build, stage 1's checkpoint, the amp-off baselines)
DEPENDS = {"splat": {"build"}, "tests": {"build"}, "render": {"build"}, "stage2": {"build", "stage1"},
           "amp2": {"build", "stage1", "stage2"}, "amp1": {"stage1"}}


def selection(only: set[str]) -> list[Check]:
    """The checks of --only (all when empty) and those they depend on, in the table's order."""
    if not only:
        return list(CHECKS)
    keys = {"env"} | only
    for key in only:
        keys |= DEPENDS.get(key, set())
    return [c for c in CHECKS if c.key in keys]


def run_check(ctx: Context, check: Check) -> list[Row]:
    need = check.estimate(ctx)
    if ctx.remaining() < need:
        return [Row(check.title, "skipped: time budget", f"needs ~{need:.0f} s, {max(0, ctx.remaining()):.0f} s left")]
    start = time.perf_counter()
    try:
        rows = check.fn(ctx)
    except Skip as why:
        rows = [Row(check.title, f"skipped: {why}")]
    except Exception as exc:  # noqa: BLE001  (a failing check is a row, the run goes on)
        traceback.print_exc(file=sys.stderr)
        rows = [Row(check.title, FAIL, f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300])]
    finally:
        release(ctx)
    log(f"{check.key}: {time.perf_counter() - start:.1f} s")
    return rows


def table(rows: list[Row]) -> str:
    """The rows as one markdown table."""
    cells = [("check", "result", "figure", "reference")] + [(r.check, r.result, r.figure, r.reference) for r in rows]
    clean = [[c.replace("|", "/") for c in row] for row in cells]
    widths = [max(len(row[i]) for row in clean) for i in range(4)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in clean]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def failed(rows: list[Row]) -> bool:
    return any(r.result == FAIL for r in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="default cuda")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (tiny presets)")
    ap.add_argument("--out", default="", help="also write the table as markdown to this file")
    ap.add_argument("--budget", type=float, default=0.0,
                    help="seconds; a check is skipped when less is left than it needs (default 400 on CUDA, "
                         "600 on the CPU)")
    ap.add_argument("--only", default="", help="comma-separated checks to run: " + ",".join(c.key for c in CHECKS))
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    budget = args.budget or (400.0 if args.device == "cuda" else 600.0)
    only = {k.strip() for k in args.only.split(",") if k.strip()}
    unknown = only - {c.key for c in CHECKS}
    if unknown:
        raise SystemExit(f"unknown checks {sorted(unknown)}; choose from {[c.key for c in CHECKS]}")
    work = tempfile.mkdtemp(prefix="gpu_check_")
    ctx = Context(torch.device(args.device), args.quick, sizes_for(args.device, args.quick), t0 + budget, work)
    rows: list[Row] = []
    if args.device == "cuda" and not torch.cuda.is_available():
        rows.append(Row("environment", FAIL, f"--device cuda but torch {torch.__version__} sees no CUDA device"))
        selected = []
    else:
        selected = selection(only)
    try:
        for check in selected:
            new = run_check(ctx, check)
            rows.extend(new)
            for r in new:
                log(f"  {r.check}: {r.result} {r.figure}")
            if args.out:  # written after every check: a run cut short still leaves its rows
                with open(args.out, "w", encoding="utf-8") as fh:
                    fh.write(table(rows) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(rows)
    verdict = "FAILED" if failed(rows) else "all run checks passed"
    print(text)
    print(f"\n{verdict} ({time.monotonic() - t0:.0f} s, device {args.device}{', quick' if args.quick else ''})")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + f"\n\n{verdict}\n")
    return 1 if failed(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
