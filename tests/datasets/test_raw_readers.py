import os

import cv2
import numpy as np
import pytest

from datasets.cameras import rescale_intrinsics
from datasets.capture.writer import NersembleV1Writer, VideoWriter, write_calibration, write_image
from datasets.raw import Selection, read_raw
from datasets.raw.vfhq import vfhq_names
from datasets.raw.sources import FrameError, ImageSequence, VideoSource, iter_frames
from tests.helpers import decode_all, tiny_rig


def test_v2_reader_lists_clips_views_frames_and_plates(small_capture):
    root, _ = small_capture
    plan = read_raw("nersemble-v2", root, Selection(stride=3))
    assert not plan.issues
    assert [c.key for c in plan.clips] == ["001/EXP-1-markers", "001/EXP-2-markers"]
    clip = plan.clips[0]
    assert clip.frame_ids == (0, 3, 6) and clip.fps == pytest.approx(73.0)
    assert len(clip.views) == 16 and all(v.background for v in clip.views)
    assert (clip.views[0].width, clip.views[0].height) == (112, 160)
    only = read_raw("nersemble", root, Selection(include=("*EXP-2*",)))
    assert [c.key for c in only.clips] == ["001/EXP-2-markers"]
    skip = read_raw("nersemble", root, Selection(exclude=("001/EXP-2-markers",)))
    assert [c.key for c in skip.clips] == ["001/EXP-1-markers"]


def test_decoding_from_the_middle_gives_the_same_frames(tmp_path):
    frames = [np.full((48, 64, 3), 8 * t, np.uint8) for t in range(30)]
    for f, t in zip(frames, range(30)):
        cv2.putText(f, str(t), (5, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2)
    path = str(tmp_path / "v.mp4")
    with VideoWriter(path, 64, 48, fps=30, gop=8) as w:
        for f in frames:
            w.write(f)
    reference = decode_all(path)
    wanted = [13, 14, 20, 29]
    got = list(iter_frames(VideoSource(path), wanted))
    assert [fid for fid, _ in got] == wanted
    for fid, img in got:
        np.testing.assert_array_equal(img, reference[fid])
    tail = list(iter_frames(VideoSource(path), [28, 29, 30, 31]))
    assert [type(i) is FrameError for _, i in tail] == [False, False, True, True]
    assert "ended after 30 frames" in tail[-1][1]


def test_v1_half_resolution_images_get_scaled_intrinsics(tmp_path):
    rig = tiny_rig(64, 96)[:2]
    root = str(tmp_path / "v1")
    writer = NersembleV1Writer(root, images_dir="images-2x", ext="png")
    writer.calibration("007", rig[0].K, {c.serial: c.world_to_cam for c in rig})
    for t in (0, 3, 6, 9):
        for c in rig:
            writer.frame("007", "EXP-1", t, c.serial, np.zeros((48, 32, 3), np.uint8))
    plan = read_raw("nersemble-v1", root, Selection(stride=2))
    clip = plan.clips[0]
    assert clip.dataset == "nersemble-v1" and clip.frame_ids == (0, 6)
    np.testing.assert_allclose(clip.views[0].K_array, rescale_intrinsics(rig[0].K, 2))
    assert (clip.views[0].width, clip.views[0].height) == (32, 48)


def test_monocular_readers(tmp_path):
    assert vfhq_names("Clip+-Ab_c9+P0+C2+F120-311") == ("-Ab_c9_P0", "C2_F120-311")
    vfhq = tmp_path / "vfhq"
    for clip in ("Clip+abc+P0+C0+F1-9", "Clip+abc+P1+C0+F1-9"):
        for i in range(5):
            write_image(str(vfhq / clip / f"{i:08d}.png"), np.zeros((40, 30, 3), np.uint8))
    plan = read_raw("vfhq", str(vfhq), Selection(stride=2), focal=2.0)
    assert [c.key for c in plan.clips] == ["abc_P0/C0_F1-9", "abc_P1/C0_F1-9"]
    view = plan.clips[0].views[0]
    assert plan.clips[0].frame_ids == (0, 2, 4)
    np.testing.assert_allclose(view.K_array, [[80, 0, 14.5], [0, 80, 19.5], [0, 0, 1]])
    video = str(tmp_path / "my clip.mp4")
    with VideoWriter(video, 32, 32, fps=25) as w:
        for _ in range(4):
            w.write(np.zeros((32, 32, 3), np.uint8))
    plan = read_raw("video", video, Selection())
    assert [c.key for c in plan.clips] == ["my_clip/video"]
    refused = read_raw("video", video, Selection(), subject="../x")
    assert not refused.clips and "refused subject '../x'" in refused.issues["../x/video"][0].reason
    plan = read_raw("images", str(vfhq / "Clip+abc+P0+C0+F1-9"), Selection(), subject="me")
    assert [c.key for c in plan.clips] == ["me/images"] and isinstance(plan.clips[0].views[0].source, ImageSequence)


def test_v2_calibration_with_per_camera_intrinsics(tmp_path):
    rig = tiny_rig(32, 48)[:2]
    root = tmp_path / "raw"
    K = {}
    for i, c in enumerate(rig):
        K[c.serial] = c.K.copy()
        K[c.serial][0, 0] *= 1 + i  # a different focal length and principal point per camera
        K[c.serial][1, 1] *= 1 + i
        K[c.serial][:2, 2] += (2 * i, -i)
    write_calibration(str(root / "001/calibration/camera_params.json"), K, {c.serial: c.world_to_cam for c in rig})
    for c in rig:
        with VideoWriter(str(root / f"001/sequences/S/images/cam_{c.serial}.mp4"), 32, 48) as w:
            w.write(np.zeros((48, 32, 3), np.uint8))
    plan = read_raw("nersemble", str(root), Selection())
    np.testing.assert_allclose(plan.clips[0].views[1].K_array, K[rig[1].serial])
    assert os.path.basename(plan.clips[0].views[0].source.url) == f"cam_{rig[0].serial}.mp4"


def test_a_video_with_a_display_rotation_is_read_upright(tmp_path):
    """Phones store a portrait video sideways with a display rotation (-90 degrees): the reader reports
    the size as shown and every decoder (sequential, from the middle, sampled) gives upright frames."""
    from datasets.capture.variants import write_video
    from datasets.raw.sources import VideoSource, iter_frames, sample_frames

    upright = []
    for t in range(12):
        frame = np.full((64, 48, 3), 40, np.uint8)  # portrait: 48 wide, 64 tall
        frame[4:16, 4:20] = (250, 30, 30)  # a red patch at the top left
        frame[48:60, 28:44] = (30, 30, 250)  # a blue one at the bottom right
        frame[30:34, :] = 8 * t
        upright.append(frame)
    path = write_video(str(tmp_path / "phone.mp4"), upright, 30.0, crf=10, rotation=-90)
    source = VideoSource(path)
    assert source.describe()[1:3] == (48, 64)
    for got in ([img for _, img in iter_frames(source, list(range(12)))],
                [img for _, img in iter_frames(source, list(range(6, 12)))],
                [img for _, img in sample_frames(source, list(range(12)), 2)]):
        for img in got:
            assert img.shape == (64, 48, 3)
            assert img[10, 12, 0] > 200 and img[10, 12, 2] < 80  # red still at the top left
            assert img[54, 36, 2] > 200 and img[54, 36, 0] < 80  # blue at the bottom right


def _vfhq_clip(folder, n: int) -> None:
    for i in range(n):
        write_image(str(folder / f"{i + 1:08d}.png"), np.full((40, 30, 3), 10 * i, np.uint8))


def test_vfhq_meta_info_splits_and_person_grouping(tmp_path):
    from datasets.raw.base import RawDataError
    from datasets.raw.vfhq import parse_meta

    root = tmp_path / "VFHQ"
    _vfhq_clip(root / "VFHQ-Train" / "Clip+ab-c+P0+C0+F10-16", 5)
    _vfhq_clip(root / "VFHQ-Train" / "Clip+ab-c+P0+C1+F40-44", 3)  # no meta: ids from the F range
    _vfhq_clip(root / "VFHQ-Test" / "Clip+xyz+P1+C0+F0-100", 4)  # no meta, the count does not fit: by position
    meta = root / "VFHQ_meta_info" / "VFHQ-Train"
    meta.mkdir(parents=True)
    rows = "\n".join(f"{f:08d} 00000000 100 120 300 310 1 2 3 4 5 6 7 8 9 10" for f in range(11, 16))
    (meta / "Clip+ab-c+P0+C0+F10-16.txt").write_text(
        f"Video: ab-c\nH: 1080\nW: 1920\nFPS: 29.97\n\nFRAME INDEX X0 Y0 W H [Landmarks (5 Points)]\n\n{rows}\n"
        "CROP: 80 60 560 540\n")
    parsed = parse_meta((meta / "Clip+ab-c+P0+C0+F10-16.txt").read_text())
    assert (parsed.width, parsed.height, parsed.fps, parsed.crop) == (1920, 1080, 29.97, (80, 60, 560, 540))
    for where in (root, root / "VFHQ-Train"):  # the folder above the splits, or one split
        plan = read_raw("vfhq", str(where), Selection())
        clips = {c.key: c for c in plan.clips}
        assert "ab-c_P0/C0_F10-16" in clips and "ab-c_P0/C1_F40-44" in clips
        c0 = clips["ab-c_P0/C0_F10-16"]
        assert c0.fps == pytest.approx(29.97) and c0.frame_ids == (11, 12, 13, 14, 15)
        assert dict(c0.source_meta)["crop"] == (80, 60, 560, 540) and dict(c0.source_meta)["split"] == "VFHQ-Train"
        assert clips["ab-c_P0/C1_F40-44"].frame_ids == (41, 42, 43)
    both = {c.key: c for c in read_raw("vfhq", str(root), Selection()).clips}
    assert both["xyz_P1/C0_F0-100"].frame_ids == (0, 1, 2, 3) and len(both) == 3
    # videos as download tools name them: grouped by person too
    vids = tmp_path / "videos"
    for name in ("Clip+ab-c+P0+C0+F10-16.mp4", "Clip+ab-c+P0+C2.mp4"):
        with VideoWriter(str(vids / name), 32, 32, fps=25) as w:
            for _ in range(5):
                w.write(np.zeros((32, 32, 3), np.uint8))
    plan = read_raw("vfhq", str(vids), Selection())
    assert [c.key for c in plan.clips] == ["ab-c_P0/C0_F10-16", "ab-c_P0/C2"]
    assert dict(plan.clips[0].source_meta)["source_frame_ids"] == (11, 12, 13, 14, 15)
    empty = tmp_path / "nothing"
    (empty / "zips").mkdir(parents=True)
    with pytest.raises(RawDataError, match="no VFHQ clip found.*zips/"):
        read_raw("vfhq", str(empty), Selection())
