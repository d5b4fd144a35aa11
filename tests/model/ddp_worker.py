"""One training process of a torchrun job in the distributed tests (tests/model/test_distributed.py):
trains the small stage-1 or stage-2 setup of the trainer tests and, on rank 0, writes the per-step losses.

    python -m torch.distributed.run --nproc_per_node 2 tests/model/ddp_worker.py STAGE SHARDS OUT STEPS [INIT]
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from datasets.config import override
from model.train.config import TrainConfig


def trainer(stage: str, shards: str, out: str, steps: int, init: str = "", checkpoint_every: int = 0):
    """The trainer of the stage's tests, the same in the reference process and under torchrun."""
    train = TrainConfig(shards=shards, out=out, steps=steps, eval_every=0, checkpoint_every=checkpoint_every,
                        image_every=0, eval_frames=4, threads=1, init=init, device="cpu")
    if stage == "guiding":
        from model.guiding.config import preset
        from model.train.guiding_trainer import GuidingTrainer
        from tests.model.test_guiding_trainer import SMALL

        return GuidingTrainer(train, override(preset("tiny"), SMALL), log=False)
    from model.gaussian.config import preset
    from model.train.gaussian_trainer import GaussianTrainer
    from tests.model.test_gaussian_trainer import STAGE2

    return GaussianTrainer(train, override(preset("tiny"), STAGE2), log=False)


def main() -> None:
    stage, shards, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    init = sys.argv[5] if len(sys.argv) > 5 else ""
    checkpoint_every = int(os.environ.get("DDP_TEST_CHECKPOINT_EVERY", "0"))
    t = trainer(stage, shards, out, steps, init, checkpoint_every)
    start = t.step
    t.fit()
    if t.world.main:
        with open(os.path.join(out, f"history-{start}.json"), "w") as f:
            json.dump({"world": t.world.size, "batch": t.batch_size, "history": t.history}, f)
    t.close()


if __name__ == "__main__":
    main()
