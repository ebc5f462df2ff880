"""Fixtures shared by several test modules."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread: tiny models gain nothing from more, and lose much when the cores are busy."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def require_vad() -> None:
    """Skip a test without the Silero VAD of this environment (tools/install.sh brings it), or fail it with
    TSEKIT_REQUIRE_VAD=1 (CI runs make install: a broken install step fails there instead of skipping)."""
    import os

    from tsekit.pretrained.vad import vad_model_path

    if not vad_model_path().is_file():
        reason = f"no {vad_model_path()} (make install brings the Silero VAD)"
        if os.environ.get("TSEKIT_REQUIRE_VAD") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
