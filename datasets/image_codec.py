"""A Zarr v3 array->bytes codec that stores each chunk as one encoded image (JPEG or PNG).

Chunks must be one image: shape [..., H, W, 3] or [..., H, W] with every leading dimension 1 (the
store uses chunks of (1, 1, H, W, 3) inside frame-block shards), dtype uint8. Channels are RGB.

Plain zarr reads these arrays after one import that registers the codec:

    import datasets.image_codec  # noqa: F401  (registers "headforge.image")
    import zarr
    rgb = zarr.open_group("stores/demo.zarr")["000/EXP-1/rgb"][0, 3]

When the project is installed (`pip install -e .`) the codec is also registered through the
`zarr.codecs` entry point, so the import is only needed when running from a bare checkout.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import parse_named_configuration
from zarr.registry import register_codec

CODEC_NAME = "headforge.image"
FORMATS = ("jpeg", "png")


def encode_image(image: np.ndarray, fmt: str, quality: int) -> bytes:
    """image: uint8 [H, W, 3] RGB or [H, W] gray -> encoded bytes."""
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    else:
        # compression level 1: PNG decode speed does not depend on it, encode is 3-5x faster than 9
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as {fmt}")
    return buf.tobytes()


def decode_image(data: bytes | np.ndarray, channels: int) -> np.ndarray:
    """Encoded bytes -> uint8 [H, W, 3] RGB (channels=3) or [H, W] (channels=1)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    flag = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(arr, flag)
    if image is None:
        raise ValueError("could not decode image chunk (corrupt or not an image)")
    if channels == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


@dataclass(frozen=True)
class ImageCodec(ArrayBytesCodec):
    """One chunk = one JPEG (lossy, `quality`) or PNG (lossless) image."""

    is_fixed_size = False

    format: str = "jpeg"
    quality: int = 95

    def __init__(self, *, format: str = "jpeg", quality: int = 95) -> None:
        if format not in FORMATS:
            raise ValueError(f"image codec format must be one of {FORMATS}, got {format!r}")
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
        object.__setattr__(self, "format", format)
        object.__setattr__(self, "quality", int(quality))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImageCodec":
        _, config = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        return cls(**(config or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"name": CODEC_NAME, "configuration": {"format": self.format, "quality": self.quality}}

    def validate(self, *, shape, dtype, chunk_grid) -> None:  # noqa: ANN001 (zarr's signature)
        if np.dtype(dtype.to_native_dtype()) != np.uint8:
            raise ValueError(f"{CODEC_NAME} stores uint8 images only, not {dtype}")

    @staticmethod
    def _image_shape(shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
        if len(shape) >= 3 and shape[-1] == 3 and all(s == 1 for s in shape[:-3]):
            return shape[-3:], 3
        if len(shape) >= 2 and all(s == 1 for s in shape[:-2]):
            return shape[-2:], 1
        raise ValueError(f"{CODEC_NAME} needs chunks holding exactly one image, got chunk shape {shape}")

    def _encode_sync(self, chunk: np.ndarray) -> bytes:
        image_shape, _ = self._image_shape(chunk.shape)
        return encode_image(chunk.reshape(image_shape), self.format, self.quality)

    def _decode_sync(self, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        image_shape, channels = self._image_shape(shape)
        image = decode_image(data, channels)
        if image.shape != image_shape:
            raise ValueError(f"decoded image has shape {image.shape}, expected {image_shape}")
        return image.reshape(shape)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec) -> Buffer | None:  # noqa: ANN001
        chunk = np.asarray(chunk_array.as_numpy_array())
        # OpenCV releases the GIL: encoding in threads runs the images of one shard in parallel
        data = await asyncio.to_thread(self._encode_sync, chunk)
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec) -> NDBuffer:  # noqa: ANN001
        data = chunk_bytes.to_bytes()
        image = await asyncio.to_thread(self._decode_sync, data, tuple(chunk_spec.shape))
        return chunk_spec.prototype.nd_buffer.from_numpy_array(image)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec) -> int:  # noqa: ANN001
        raise NotImplementedError("image chunks have a data-dependent size")


register_codec(CODEC_NAME, ImageCodec)
