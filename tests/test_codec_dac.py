"""dac_16khz: the real DAC 16 kHz architecture with random weights saved to a file (nothing is downloaded).

Skipped unless the ``descript-audio-codec`` package (the ``dac`` extra, which ``make install`` and so CI install) is
installed; an error instead with TSEKIT_REQUIRE_DAC=1 (CI).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import pytest
import torch

from tsekit import TsekitError
from tsekit.codec.registry import load_codec

try:
    import dac
except ImportError:
    if os.environ.get("TSEKIT_REQUIRE_DAC") == "1":
        raise  # CI installs the dac extra: a broken install fails here instead of skipping
    pytest.skip("the dac extra is not installed", allow_module_level=True)

from tsekit.pretrained.dac_codec import ARCHITECTURE  # noqa: E402


def save_random_dac(path: Path, seed: int) -> Path:
    """A checkpoint in the release's layout ({"state_dict", "metadata"}) with seeded random weights."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = dac.DAC(**ARCHITECTURE)
    torch.save({"state_dict": model.state_dict(), "metadata": {"kwargs": dict(ARCHITECTURE)}}, path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("dac")
    return save_random_dac(folder / "a.pth", 0), save_random_dac(folder / "b.pth", 1)


def test_shapes_frame_rate_and_token_range(one_torch_thread, weights):
    codec = load_codec("dac_16khz", weights=str(weights[0]))
    assert (codec.sample_rate, codec.frame_rate, codec.num_codebooks, codec.codebook_size) == (16000, 50, 12, 1024)
    wav = 0.1 * torch.randn(2, 3000, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tokens = codec.encode(wav)
        for length, frames in [(1, 1), (320, 1), (321, 2)]:
            assert codec.encode(torch.randn(1, length)).shape == (1, 12, frames)
        assert codec.latents(wav).shape == (2, 1024, math.ceil(3000 / 320))
        decoded = codec.decode(tokens)
    assert tokens.dtype == torch.int64 and tokens.shape == (2, 12, 10)
    assert 0 <= int(tokens.min()) and int(tokens.max()) < 1024 and len(torch.unique(tokens)) > 5
    assert decoded.shape == (2, 10 * 320 - 8)
    other = load_codec("dac_16khz", weights=str(weights[1]))
    with torch.inference_mode():
        assert not torch.equal(other.encode(wav), tokens)


def test_default_weights_and_missing_weights_error(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".cache" / "descript" / "dac" / "weights_16khz_8kbps_0.0.5.pth"
    with pytest.raises(TsekitError) as err:
        load_codec("dac_16khz")
    assert str(expected) in str(err.value) and "weights_16khz.pth" in str(err.value)
    assert "\n" not in str(err.value)
    expected.parent.mkdir(parents=True)
    expected.write_bytes(weights[0].read_bytes())
    assert load_codec("dac_16khz").weights == expected
