"""Configuration of a training run (what to read, where to write, how long, how often)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    shards: str = ""  # shard set: a directory or fsspec URL (python cli.py build-shards)
    out: str = "runs/guiding"  # run directory: checkpoints, TensorBoard logs, previews
    preset: str = "tiny"  # model preset (paper | paper-v1 | tiny)
    init: str = ""  # stage 2: the stage-1 checkpoint it starts from
    steps: int = 2000  # optimiser steps in all (a resumed run continues to this count)
    minutes: float = 0.0  # stop after this much training time in this process (0: no limit)
    seed: int = 0  # model initialisation, sample order and condition draws
    synth_ratio: float = 0.5  # chance that the expression condition is a synthesized image (where present)
    log_every: int = 10  # steps between TensorBoard scalars
    image_every: int = 100  # steps between image grids (TensorBoard and previews/)
    eval_every: int = 200  # steps between evaluations on held-out views (0: only at the end)
    eval_frames: int = 16  # frames evaluated (all their held-out views)
    checkpoint_every: int = 200  # steps between checkpoints (and one at the end)
    num_workers: int = 0  # DataLoader worker processes (0: decode in threads of this process)
    decode_threads: int = 2  # image decoding threads per loader process
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads (0: torch's default)
    deterministic: bool = False  # deterministic algorithms (exact resume on CPU holds without it too)
    amp: bool = False  # bf16 autocast of the model's forward pass on CUDA (losses and renderers stay float32)
    cache_dir: str = ""  # local cache of a remote shard set (empty: a temporary directory)
    storage_options: dict = field(default_factory=dict)  # fsspec options of a remote shard set
