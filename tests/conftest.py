import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope="session")
def small_capture(tmp_path_factory):
    """A NeRSemble v2 marker capture: 1 participant, 2 sequences, 16 cameras, 7 frames of 112x160."""
    from tests.helpers import marker_capture

    root = str(tmp_path_factory.mktemp("capture") / "raw")
    info = marker_capture(root, participants=1, sequences=2, n_frames=7)
    return root, info


@pytest.fixture(scope="session")
def synthetic_capture(tmp_path_factory):
    """The synthetic head capture: 2 identities, 1 sequence, 3 frames, 16 cameras, 560x800."""
    from datasets.synthetic import SynthConfig, write_synthetic_capture

    root = str(tmp_path_factory.mktemp("synth") / "capture")
    write_synthetic_capture(root, SynthConfig(participants=2, sequences=1, frames=3))
    return root


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint (moto) on 127.0.0.1 with the bucket headforge-test; yields s3fs storage options."""
    from datasets.local_s3 import local_s3

    with local_s3("headforge-test") as options:
        yield options
