"""encodec_24khz: the real EnCodec 24 kHz architecture with random weights saved to a file, so nothing is
downloaded. Random codebooks are filled in by hand: an untrained model's codebooks are all zero (k-means
fills them on the first training batch), which would map every frame to token 0.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

from tsekit import TsekitError
from tsekit.codec.registry import build_codec, load_codec
from tsekit.pretrained.encodec_codec import random_checkpoint

encodec = pytest.importorskip("encodec")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("encodec")
    return random_checkpoint(folder / "a.th", 0), random_checkpoint(folder / "b.th", 1)


@pytest.fixture(scope="module")
def wav() -> torch.Tensor:
    return 0.1 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("bandwidth,codebooks", [(1.5, 2), (3, 4), (6.0, 8), (12, 16), (24, 32)])
def test_codebooks_per_bandwidth_frames_and_range(one_torch_thread, weights, wav, bandwidth, codebooks):
    codec = build_codec("encodec_24khz", {"bandwidth": bandwidth, "weights": str(weights[0])}).eval()
    assert (codec.sample_rate, codec.frame_rate, codec.codebook_size) == (24000, 75, 1024)
    assert codec.num_codebooks == codebooks
    with torch.inference_mode():
        tokens = codec.encode(wav)
    assert tokens.dtype == torch.int64
    assert tokens.shape == (2, codebooks, math.ceil(4000 / 320))  # 13 frames: the end is padded to a whole frame
    assert 0 <= int(tokens.min()) and int(tokens.max()) < 1024
    assert len(torch.unique(tokens)) > 5  # random codebooks give varied tokens, not one constant
    codec.check_tokens(tokens, "test")


def test_frame_count_is_the_number_of_started_frames(one_torch_thread, weights):
    codec = load_codec("encodec_24khz", bandwidth=1.5, weights=str(weights[0]))
    with torch.inference_mode():
        for length, frames in [(1, 1), (320, 1), (321, 2), (640, 2), (641, 3)]:
            assert codec.encode(torch.randn(1, length)).shape[-1] == frames, length
            assert codec.latents(torch.randn(1, length)).shape == (1, 128, frames), length


def test_decode_gives_320_samples_per_frame_and_smaller_bandwidths_are_prefixes(one_torch_thread, weights, wav):
    high = load_codec("encodec_24khz", bandwidth=6, weights=str(weights[0]))
    low = load_codec("encodec_24khz", bandwidth=1.5, weights=str(weights[0]))
    with torch.inference_mode():
        tokens = high.encode(wav)
        decoded = high.decode(tokens)
        # residual quantisation: the first codebooks do not depend on how many follow
        assert torch.equal(low.encode(wav), tokens[:, :2])
        assert low.decode(tokens[:, :2]).shape == (2, 13 * 320)
    assert decoded.shape == (2, 13 * 320)
    assert torch.isfinite(decoded).all() and decoded.abs().max() > 0


def test_the_weights_file_is_what_is_loaded(one_torch_thread, weights, wav):
    a = load_codec("encodec_24khz", weights=str(weights[0]))
    b = load_codec("encodec_24khz", weights=str(weights[1]))
    again = load_codec("encodec_24khz", weights=str(weights[0]))
    with torch.inference_mode():
        assert not torch.equal(a.encode(wav), b.encode(wav))
        assert torch.equal(a.encode(wav), again.encode(wav))
    saved = torch.load(weights[1], weights_only=True)
    name = "model.0.conv.conv.weight_v"
    assert torch.equal(b.model.encoder.state_dict()[name], saved[f"encoder.{name}"])


def test_default_weights_are_read_from_torch_hub_checkpoints(one_torch_thread, weights, wav, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = tmp_path / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th"
    with pytest.raises(TsekitError) as err:
        load_codec("encodec_24khz")
    message = str(err.value)
    assert str(expected) in message and "\n" not in message
    assert "https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th" in message
    assert "weights=" in message
    expected.parent.mkdir(parents=True)
    expected.write_bytes(weights[1].read_bytes())
    found = load_codec("encodec_24khz")
    assert found.weights == expected
    with torch.inference_mode():
        assert torch.equal(found.encode(wav), load_codec("encodec_24khz", weights=str(weights[1])).encode(wav))


def test_missing_weights_path_is_a_one_line_error(tmp_path):
    missing = tmp_path / "nowhere.th"
    with pytest.raises(TsekitError, match="nowhere.th") as err:
        load_codec("encodec_24khz", weights=str(missing))
    assert "\n" not in str(err.value)


def test_bad_bandwidth_lists_the_valid_ones(weights):
    with pytest.raises(TsekitError) as err:
        load_codec("encodec_24khz", bandwidth=5, weights=str(weights[0]))
    assert "1.5, 3, 6, 12, 24" in str(err.value) and "\n" not in str(err.value)


def test_checkpoints_that_are_not_encodec_or_untrained_are_refused(tmp_path):
    other = tmp_path / "other.th"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(TsekitError, match="not an EnCodec 24 kHz checkpoint") as err:
        load_codec("encodec_24khz", weights=str(other))
    assert "\n" not in str(err.value)
    garbage = tmp_path / "garbage.th"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(TsekitError, match="cannot load"):
        load_codec("encodec_24khz", weights=str(garbage))
    untrained = tmp_path / "untrained.th"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.save(encodec.EncodecModel.encodec_model_24khz(pretrained=False).state_dict(), untrained)
    with pytest.raises(TsekitError, match="never initialised"):
        load_codec("encodec_24khz", weights=str(untrained))


def test_check_tokens_errors(weights):
    codec = load_codec("encodec_24khz", bandwidth=1.5, weights=str(weights[0]))
    codec.check_tokens(torch.zeros(2, 5, dtype=torch.long), "ok")
    with pytest.raises(TsekitError, match="3 codebooks, but codec encodec_24khz uses 2"):
        codec.check_tokens(torch.zeros(3, 5, dtype=torch.long), "x")
    with pytest.raises(TsekitError, match=r"outside \[0, 1024\)"):
        codec.check_tokens(torch.full((2, 5), 1024), "x")
    with pytest.raises(TsekitError, match="expected integer tokens"):
        codec.check_tokens(torch.zeros(2, 5), "x")
    with pytest.raises(TsekitError, match="codebooks"):
        codec.decode(torch.zeros(1, 3, 5, dtype=torch.long))
