"""Every array of a preprocessed store and of a shard set, and every field of a training sample, once:
name, dtype, shape in named sizes, what writes it and what it holds. The stages create their arrays from
here, the shard builder lays out its arrays from here, the samples take their frame fields from here,
`cli.py info` describes a store's arrays from here, and the trainer names the stage a missing product
comes from from here.

Sizes: T frames of a clip, V views (cameras), R working resolution, C face-crop side, N synthesized images
per frame, P points of the landmark detector's full set, E expression coefficients, I identity
coefficients of a morphable model, X and S expression and shape coefficients of a released FLAME tracking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ArraySpec:
    name: str  # store: path in a clip group ("fit/pose"); shard set: path in a split group
    dtype: str
    dims: tuple[str | int, ...]  # named sizes (above) or fixed ones
    source: str  # store: the stage that writes it; shard set: the store array it is copied from, or "build-shards"
    doc: str
    kind: str = "frame"  # store: frame (sharded on frame blocks) | clip (one small array per clip);
    #                      shard set: image (encoded bytes copied) | matte (zstd) | raw;
    #                      sample: view (stage 1 stacks N views in front) | frame (one per sample)
    image: str = ""  # store images: "jpeg", "png", or "setting" (the stage's image_format)
    optional: bool = False  # written only in some runs (a morphable model's coefficients)

    def shape(self, **sizes: int) -> tuple[int, ...]:
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.dims)


def _table(*specs: ArraySpec) -> dict[str, ArraySpec]:
    return {s.name: s for s in specs}


STORE = _table(
    ArraySpec("framing/crop", "int32", ("T", "V", 3), "framing",
              "x0, y0, size of the stored square, source pixels (may extend past the frame: black padding)"),
    ArraySpec("framing/face_box", "float32", ("T", "V", 5), "framing",
              "the framing pass's face, source pixels, and score (-1 interpolated, 0 none)"),
    ArraySpec("framing/placement", "int8", ("V",), "framing", "how each camera's square was chosen (codes in attrs)",
              kind="clip"),
    ArraySpec("rgb", "uint8", ("T", "V", "R", "R", 3), "ingest", "the images at the working resolution",
              image="setting"),
    ArraySpec("rgb_ok", "bool", ("T", "V"), "ingest", "the image decoded (False: see the ledger)"),
    ArraySpec("cameras/K_frames", "float32", ("T", "V", 3, 3), "ingest", "intrinsics of each stored frame"),
    ArraySpec("cameras/K", "float32", ("V", 3, 3), "ingest",
              "intrinsics of the stored frames (framing that follows the head: of frame 0)", kind="clip"),
    ArraySpec("cameras/world_to_cam", "float32", ("V", 4, 4), "ingest", "OpenCV world-to-camera", kind="clip"),
    ArraySpec("background", "uint8", ("V", "R", "R", 3), "ingest", "background plates, same crop and resize",
              kind="clip", image="setting"),
    ArraySpec("background_ok", "bool", ("V",), "ingest", "the camera has a background plate", kind="clip"),
    ArraySpec("released_alpha", "uint8", ("T", "V", "R", "R"), "ingest",
              "the release's own mattes, same crop and resize", image="png", optional=True),
    ArraySpec("released_alpha_ok", "bool", ("T", "V"), "ingest", "the release has a matte of the image",
              optional=True),
    ArraySpec("tracking/rotation", "float32", ("T", 3), "ingest", "released FLAME tracking: Euler XYZ, radians",
              kind="clip", optional=True),
    ArraySpec("tracking/translation", "float32", ("T", 3), "ingest", "released FLAME tracking: world translation",
              kind="clip", optional=True),
    ArraySpec("tracking/jaw", "float32", ("T", 3), "ingest", "released FLAME tracking: jaw axis-angle", kind="clip",
              optional=True),
    ArraySpec("tracking/neck", "float32", ("T", 3), "ingest", "released FLAME tracking: neck axis-angle",
              kind="clip", optional=True),
    ArraySpec("tracking/eyes", "float32", ("T", 6), "ingest", "released FLAME tracking: eyes axis-angle",
              kind="clip", optional=True),
    ArraySpec("tracking/expression", "float32", ("T", "X"), "ingest", "released FLAME tracking: expression",
              kind="clip", optional=True),
    ArraySpec("tracking/shape", "float32", ("S",), "ingest", "released FLAME tracking: shape", kind="clip",
              optional=True),
    ArraySpec("tracking/scale", "float32", (1,), "ingest", "released FLAME tracking: model -> world scale",
              kind="clip", optional=True),
    ArraySpec("tracking/ok", "bool", ("T",), "ingest", "released FLAME tracking has the frame", kind="clip",
              optional=True),
    ArraySpec("alpha", "uint8", ("T", "V", "R", "R"), "matting", "matte", image="png"),
    ArraySpec("lmk2d", "float32", ("T", "V", 68, 3), "landmarks", "iBUG-68 x, y, confidence (0: no face)"),
    ArraySpec("lmk_full", "float32", ("T", "V", "P", 3), "landmarks",
              "the detector's full set (mediapipe: 478 points x, y, z pixels)"),
    ArraySpec("face_box", "float32", ("T", "V", 5), "landmarks", "face box x0, y0, x1, y1 and score"),
    ArraySpec("faces", "int16", ("T", "V"), "landmarks", "faces detected"),
    ArraySpec("lmk_source", "int8", ("T", "V"), "landmarks", "the backend that found the points (codes in attrs)"),
    ArraySpec("fit/pose", "float32", ("T", 4, 4), "fitting", "head -> world (world = scale R x + t)"),
    ArraySpec("fit/scale", "float32", ("T",), "fitting", "head-frame or model units -> world"),
    ArraySpec("fit/lmk3d", "float32", ("T", 68, 3), "fitting", "3D landmarks, world"),
    ArraySpec("fit/residual", "float32", ("T", "V"), "fitting", "median reprojection error per view, pixels"),
    ArraySpec("fit/ok", "bool", ("T",), "fitting", "the frame was fitted"),
    ArraySpec("fit/expression", "float32", ("T", "E"), "fitting", "morphable model expression coefficients",
              optional=True),
    ArraySpec("fit/identity", "float32", ("I",), "fitting", "the subject's identity coefficients", kind="clip",
              optional=True),
    ArraySpec("fit/reference", "float32", (68, 3), "fitting", "the subject's landmarks in the head frame",
              kind="clip"),
    ArraySpec("face_crop", "uint8", ("T", "V", "C", "C", 3), "crops", "aligned face crops", image="jpeg"),
    ArraySpec("crop_transform", "float32", ("T", "V", 2, 3), "crops", "image -> crop similarity"),
    ArraySpec("face_mask", "uint8", ("T", "V", "R", "R"), "crops", "face region of the non-face image", image="png"),
    ArraySpec("crop_ok", "bool", ("T", "V"), "crops", "a crop was made"),
    ArraySpec("synth", "uint8", ("T", "N", "C", "C", 3), "synthesis", "the frame's expression on other identities",
              image="jpeg"),
    ArraySpec("synth_source", "int32", ("T", "N", 3), "synthesis", "source of each image: pool index, frame, view"),
    ArraySpec("synth_view", "int16", ("T",), "synthesis", "the driving view (-1: none)"),
    ArraySpec("synth_ok", "bool", ("T", "N"), "synthesis", "the image was made"),
)

BUILT = "build-shards"
SHARDS = _table(
    ArraySpec("rgb", "uint8", ("V", "R", "R", 3), "rgb", "images, the store's encoded bytes", kind="image"),
    ArraySpec("face_crop", "uint8", ("V", "C", "C", 3), "face_crop", "face crops, the store's encoded bytes",
              kind="image"),
    ArraySpec("alpha", "uint8", ("V", "R", "R"), "alpha", "mattes, zstd (lossless, fast to decode)", kind="matte"),
    ArraySpec("face_mask", "uint8", ("V", "R", "R"), "face_mask", "face masks, zstd", kind="matte"),
    ArraySpec("synth", "uint8", ("N", "C", "C", 3), "synth", "synthesized expression images", kind="image"),
    ArraySpec("synth_ok", "bool", ("N",), "synth_ok", "the synthesized image exists", kind="raw"),
    ArraySpec("view_ok", "bool", ("V",), BUILT, "the view is a usable item", kind="raw"),
    ArraySpec("heldout", "bool", ("V",), BUILT, "the view is held out for evaluation", kind="raw"),
    ArraySpec("crop_ok", "bool", ("V",), "crop_ok", "a face crop exists", kind="raw"),
    ArraySpec("K", "float32", ("V", 3, 3), "cameras/K_frames", "intrinsics of the row's frame", kind="raw"),
    ArraySpec("world_to_cam", "float32", ("V", 4, 4), "cameras/world_to_cam", "OpenCV world-to-camera", kind="raw"),
    ArraySpec("lmk2d", "float32", ("V", 68, 3), "lmk2d", "2D landmarks", kind="raw"),
    ArraySpec("crop_transform", "float32", ("V", 2, 3), "crop_transform", "image -> crop similarity", kind="raw"),
    ArraySpec("pose", "float32", (4, 4), "fit/pose", "head -> world", kind="raw"),
    ArraySpec("scale", "float32", (), "fit/scale", "head -> world scale", kind="raw"),
    ArraySpec("lmk3d", "float32", (68, 3), "fit/lmk3d", "3D landmarks", kind="raw"),
    ArraySpec("identity", "int32", (), BUILT, "index of the subject in the split", kind="raw"),
    ArraySpec("clip", "int32", (), BUILT, "index of the clip in the manifest", kind="raw"),
    ArraySpec("frame", "int32", (), BUILT, "frame index in the store clip", kind="raw"),
    ArraySpec("expression", "float32", ("E",), "fit/expression", "morphable model expression", kind="raw",
              optional=True),
)

DERIVED = "sample"
SAMPLE = _table(  # datasets/shards/samples.py; source: the shard array a field is read from, or "sample"
    ArraySpec("rgb", "uint8", ("R", "R", 3), "rgb", "the view's image", kind="view"),
    ArraySpec("alpha", "uint8", ("R", "R"), "alpha", "the view's matte", kind="view"),
    ArraySpec("K", "float32", (3, 3), "K", "intrinsics", kind="view"),
    ArraySpec("world_to_cam", "float32", (4, 4), "world_to_cam", "OpenCV world-to-camera", kind="view"),
    ArraySpec("lmk2d", "float32", (68, 3), "lmk2d", "2D landmarks", kind="view"),
    ArraySpec("view", "int64", (), DERIVED, "slot of the view in the clip's camera list", kind="view"),
    ArraySpec("non_face", "uint8", ("R", "R", 3), DERIVED, "the (first) view's image with the face black"),
    ArraySpec("condition", "uint8", ("C", "C", 3), DERIVED,
              "expression condition: another view's face crop or a synthesized image"),
    ArraySpec("condition_kind", "int64", (), DERIVED, "0 crop of another view, 1 synthesized, 2 own crop"),
    ArraySpec("pose", "float32", (4, 4), "pose", "head -> world"),
    ArraySpec("scale", "float32", (), "scale", "head -> world scale"),
    ArraySpec("lmk3d", "float32", (68, 3), "lmk3d", "3D landmarks, world"),
    ArraySpec("identity", "int32", (), "identity", "index of the subject in the split"),
    ArraySpec("clip", "int32", (), "clip", "index of the clip in the manifest"),
    ArraySpec("frame", "int32", (), "frame", "frame index in the store clip"),
    ArraySpec("expression", "float32", ("E",), "expression", "morphable model expression", optional=True),
    ArraySpec("epoch", "int64", (), "streaming", "the epoch the sample was drawn in (datasets/streaming.py)"),
    ArraySpec("position", "int64", (), "streaming", "its position in the epoch's global order (resume)"),
    ArraySpec("padding", "bool", (), "streaming",
              "a repeated sample that evens out the ranks' work (datasets/shards/order.py); not to be counted twice"),
    ArraySpec("source", "int64", (), "streaming", "MixtureDataset: index of the dataset it came from",
              optional=True),
)
# fields copied per sample from the frame's raw shard arrays
SAMPLE_FRAME_FIELDS = tuple(s.name for s in SAMPLE.values() if s.kind == "frame" and s.source in SHARDS)


def store_spec(name: str) -> ArraySpec:
    if name not in STORE:
        raise KeyError(f"{name!r} is not a store array of the schema (datasets/schema.py)")
    return STORE[name]


def producing_stage(shard_array: str) -> str:
    """The preprocessing stage (or build-shards) whose output a shard-set array is."""
    source = SHARDS[shard_array].source
    return STORE[source].source if source in STORE else source


def ensure_store_array(store: Any, group: Any, name: str, sizes: dict[str, int], block_frames: int = 0, *,
                       image_format: str | None = None, jpeg_quality: int = 95) -> Any:
    """Create (or keep, when it matches) store array `name` of a clip group with the schema's dtype and
    shape; `sizes` gives the named sizes it uses, `image_format` the stage's setting where the schema says so."""
    spec = store_spec(name)
    fmt = image_format if spec.image == "setting" else (spec.image or None)
    shape = spec.shape(**sizes)
    if spec.kind == "frame":
        return store.ensure_frame_array(group, name, shape, spec.dtype, block_frames, image_format=fmt,
                                        jpeg_quality=jpeg_quality)
    return store.ensure_view_array(group, name, shape, spec.dtype, image_format=fmt, jpeg_quality=jpeg_quality)
