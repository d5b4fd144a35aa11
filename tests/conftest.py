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
