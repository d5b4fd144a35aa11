"""Held-out evaluation shared by both stages: PSNR and SSIM of the fine images and IoU of the masks on
the held-out views and frames of a shard set (its training views when it holds none out), in a fixed
order, so that a stage-1 and a stage-2 model are measured on the same images."""

from __future__ import annotations

import torch

from datasets.streaming import ShardDataset
from model.guiding.config import GuidingConfig
from model.guiding.losses import iou
from model.metrics import psnr, ssim
from model.train.data import ShardSetError, prepare_batch
from model.train.frames import FrameTable


def heldout_views(manifest) -> tuple[str, int]:
    """-> (the `use` to evaluate on, views per frame)."""
    heldout = manifest.split("train")["counts"]["heldout"]["rows"] > 0
    views = min(4, len(manifest.doc.get("holdout_views") or []) or 4)  # up to 4 held-out cameras per frame
    return ("heldout" if heldout else "train"), views


def evaluation_data(shards: str, views: int, use: str, batch_size: int, storage_options: dict | None = None,
                    cache_dir: str | None = None, seed: int = 0) -> ShardDataset:
    return ShardDataset(shards, split="train", sample="stage1", use=use, views=views, synth_ratio=0.0, seed=seed,
                        shuffle=False, batch_size=batch_size, drop_last=False, repeat=False,
                        storage_options=storage_options or None, cache_dir=cache_dir,
                        rank=0, world_size=1, nodes=1)  # one process evaluates everything, even under torchrun


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, config: GuidingConfig, data: ShardDataset, frames: FrameTable,
                   device: torch.device, limit: int, heldout: bool) -> dict[str, float]:
    """Mean PSNR / SSIM of `model(...).fine` and IoU of `.mask` over the first `limit` frames of `data`."""
    model.eval()
    ious, psnrs, ssims, seen = [], [], [], 0
    for batch in data:
        inputs, targets = prepare_batch(batch, config, frames, device)
        out = model(inputs)
        ious.append(iou(out.mask, targets.alpha > 0.5))
        psnrs.append(psnr(out.fine, targets.rgb))
        ssims.append(ssim(out.fine, targets.rgb))
        seen += batch["rgb"].shape[0]
        if seen >= limit:
            break
    if not psnrs:
        raise ShardSetError("the shard set has no frames to evaluate on")
    return {"iou": float(torch.cat(ious).mean()), "psnr": float(torch.cat(psnrs).mean()),
            "ssim": float(torch.cat(ssims).mean()), "views": float(sum(len(x) for x in ious)),
            "heldout": float(heldout)}


def evaluate_checkpoint(path: str, shards: str | None = None, frames: int = 16, device: str = "cpu",
                        storage_options: dict | None = None, batch_size: int = 2) -> dict[str, float]:
    """A trained run (either stage) on the held-out views of its shard set (or `shards`) -> metrics with
    `stage` and `step` added. Stage 1 and stage 2 of the same shard set see the same images."""
    from datasets.shards.reader import ShardReader
    from model.load import frame_table, load_trained

    trained = load_trained(path, device)
    url = shards or trained.shards
    manifest = ShardReader(url, storage_options=storage_options or None).manifest
    use, views = heldout_views(manifest)
    data = evaluation_data(url, views, use, batch_size, storage_options)
    metrics = evaluate_model(trained.model, trained.config, data, frame_table(trained, manifest),
                             torch.device(device), frames, heldout=use == "heldout")
    return {**metrics, "stage": trained.stage, "step": float(trained.step)}
