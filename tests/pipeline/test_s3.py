"""The store written to and read back over s3:// from a real S3 endpoint (moto) on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.store import Store
from pipeline.runner import preprocess
from pipeline.store_info import describe_store
from tests.helpers import ingest_config


@pytest.mark.parametrize("workers", [0, 1])
def test_preprocess_into_s3_reads_back_the_same_arrays(tmp_path, small_capture, s3_endpoint, workers):
    root, _ = small_capture
    local = ingest_config(str(tmp_path / "local.zarr"), root, resolution=32, block_frames=2)
    preprocess(local)
    remote = ingest_config(f"s3://headforge-test/run{workers}/store.zarr", root, resolution=32, block_frames=2,
                           workers=workers)
    remote.storage_options = dict(s3_endpoint)
    summary = preprocess(remote)
    assert summary.stages["ingest"].done == 8 and summary.exit_code(False) == 0
    again = preprocess(remote)
    assert again.stages["ingest"].already_done == 8 and again.stages["ingest"].done == 0

    s3 = Store(remote.store, s3_endpoint, mode="r")
    assert s3.clips() == Store(local.store).clips()
    for clip in s3.clips():
        a, b = Store(local.store).clip(clip), s3.clip(clip)
        for name in ("rgb", "rgb_ok", "background", "cameras/K", "cameras/world_to_cam"):
            np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=f"{clip} {name}")
    info = describe_store(s3)
    assert all(c["stages"]["ingest"]["done"] == 4 for c in info["clips"])
