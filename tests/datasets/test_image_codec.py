import os
import subprocess
import sys

import numpy as np
import zarr

from datasets.image_codec import ImageCodec


def _array(path, fmt, data):
    g = zarr.open_group(str(path), mode="w")
    a = g.create_array("rgb", shape=data.shape, dtype="uint8", chunks=(1, 1) + data.shape[2:],
                       shards=(2,) + data.shape[1:], serializer=ImageCodec(format=fmt, quality=95),
                       compressors=None, filters=None, fill_value=0)
    a[...] = data
    return a


def test_png_is_lossless_and_jpeg_is_close(tmp_path):
    y, x = np.mgrid[0:32, 0:32]

    def smooth(phase):
        return np.stack([128 + 100 * np.sin(x / 5 + c + phase) * np.cos(y / 7) for c in range(3)], -1)

    data = np.stack([np.stack([smooth(t + 0.3 * v) for v in range(3)]) for t in range(4)]).astype(np.uint8)
    png = _array(tmp_path / "p.zarr", "png", data)
    np.testing.assert_array_equal(png[...], data)
    jpg = _array(tmp_path / "j.zarr", "jpeg", data)
    err = jpg[...].astype(float) - data
    psnr = 10 * np.log10(255**2 / np.mean(err**2))
    assert psnr > 38
    # one object per shard of 2 frames x 3 views, each holding 6 images
    assert sorted(os.listdir(tmp_path / "j.zarr" / "rgb" / "c")) == ["0", "1"]


def test_plain_zarr_reads_it_in_a_fresh_interpreter(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, (2, 1, 16, 16, 3)).astype(np.uint8)
    _array(tmp_path / "s.zarr", "png", data)
    code = ("import datasets.image_codec, zarr, numpy as np; "
            f"a = zarr.open_group({str(tmp_path / 's.zarr')!r}, mode='r')['rgb']; print(int(a[...].sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert int(out.stdout) == int(data.astype(np.int64).sum())


def test_gray_images_round_trip(tmp_path):
    data = np.random.default_rng(2).integers(0, 255, (3, 2, 10, 12)).astype(np.uint8)
    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="w")
    a = g.create_array("alpha", shape=data.shape, dtype="uint8", chunks=(1, 1, 10, 12), shards=(3, 2, 10, 12),
                       serializer=ImageCodec(format="png"), compressors=None, filters=None, fill_value=0)
    a[...] = data
    np.testing.assert_array_equal(a[...], data)
