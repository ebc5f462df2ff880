"""The toolkit's codec and vocoder: frame and token shapes, the ISTFT, the codebook choice, the discriminators."""

from __future__ import annotations

import pytest
import torch
import yaml

from tsekit import TsekitError
from tsekit.codec.discriminators import (
    Discriminators,
    MultiScaleMelLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from tsekit.codec.registry import build_codec, load_codec
from tsekit.codec.vocos import ISTFTHead
from tsekit.pretrained.mel import LogMel, pad_for_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_CODEC = {"sample_rate": 8000, "n_mels": 20, "n_fft": 256, "hop_length": 64, "downsample": 2,
              "encoder_width": 16, "encoder_blocks": 1, "latent_dim": 8, "num_codebooks": 3, "codebook_size": 16,
              "kmeans_iters": 2, "decoder_width": 16, "decoder_blocks": 1}
TINY_VOCODER = {"sample_rate": 8000, "n_mels": 20, "n_fft": 256, "hop_length": 64, "width": 16, "num_blocks": 1}


def test_mel_frames_and_vocoder_length():
    vocoder = build_codec("tsekit_vocoder", TINY_VOCODER).eval()
    for samples in (1000, 1024, 64):
        mel = vocoder.mel(torch.randn(2, samples))
        frames = -(-samples // 64)
        assert mel.shape == (2, 20, frames)
        assert vocoder(mel).shape == (2, frames * 64)
    with pytest.raises(TsekitError, match="expected a log-mel"):
        vocoder(torch.randn(2, 19, 5))


def test_default_mel_is_the_22khz_hop_256_setting():
    vocoder = build_codec("tsekit_vocoder")
    assert (vocoder.sample_rate, vocoder.n_mels, vocoder.hop_length) == (22050, 80, 256)
    assert vocoder.mel(torch.randn(1, 22050)).shape == (1, 80, 87)


def test_istft_head_inverts_the_frame_grid_of_the_front_end():
    wav = torch.randn(2, 1000)
    front, head = LogMel(8000, 256, 64, 20), ISTFTHead(8, 256, 64)
    spec = torch.stft(pad_for_frames(wav, 256, 64), 256, 64, window=torch.hann_window(256), center=False,
                      return_complex=True)
    assert spec.shape[-1] == front(wav).shape[-1]
    assert torch.allclose(head.inverse(spec)[:, :1000], wav, atol=1e-5)


def test_codec_tokens_latents_and_decode_length():
    codec = build_codec("tsekit_codec", TINY_CODEC)
    codec.train()
    codec.reconstruct(torch.randn(4, 2000) * 0.1)  # the first training pass initialises the codebooks (k-means)
    codec.eval()
    wav = torch.randn(2, 1000) * 0.1
    tokens = codec.encode(wav)
    frames = -(-1000 // 128)  # hop 64 x downsample 2
    assert tokens.shape == (2, 3, frames) and tokens.dtype == torch.int64
    assert 0 <= int(tokens.min()) and int(tokens.max()) < 16
    assert codec.frame_rate == 8000 / 128
    assert codec.latents(wav).shape == (2, 8, frames)
    assert codec.decode(tokens).shape == (2, frames * 128)
    assert codec.decode(tokens[0]).shape == (frames * 128,)
    with pytest.raises(TsekitError, match="outside"):
        codec.decode(tokens + 16)


def test_use_codebooks_chooses_how_many_codebooks_encode_emits():
    codec = build_codec("tsekit_codec", {**TINY_CODEC, "use_codebooks": 1})
    codec.train()
    codec.reconstruct(torch.randn(4, 2000) * 0.1)
    codec.eval()
    wav = torch.randn(1, 1000) * 0.1
    one = codec.encode(wav)
    assert one.shape[1] == codec.num_codebooks == 1
    codec.use_codebooks(None)
    full = codec.encode(wav)
    assert full.shape[1] == 3 and torch.equal(full[:, :1], one)  # residual stages: the first is the same
    assert codec.bits_per_second == pytest.approx(3 * 62.5 * 4)
    with pytest.raises(TsekitError, match="use_codebooks must be in 1..3"):
        codec.use_codebooks(4)
    with pytest.raises(TsekitError, match="3 codebooks, but codec tsekit_codec uses 1"):
        codec.use_codebooks(1)
        codec.decode(full)


def test_a_trained_codec_loads_with_fewer_codebooks(tmp_path):
    """``use_codebooks`` of a trained codec (``load_codec(exp, use_codebooks=N)``, a config's codec.params, tokenize's
    --params): tokens are the first N codebooks of the full set, resynthesis decodes those N only."""
    from tsekit import checkpoint as ckpt
    from tsekit.codec.train import resynthesize

    torch.manual_seed(0)
    trained = build_codec("tsekit_codec", TINY_CODEC)
    trained.train()
    trained.reconstruct(torch.randn(4, 2000) * 0.1)  # k-means fills the codebooks
    exp = tmp_path / "codec"
    exp.mkdir()
    (exp / "config.yaml").write_text(yaml.safe_dump({"codec": {"name": "tsekit_codec", "params": TINY_CODEC}}))
    ckpt.save_checkpoint(exp / "codec.pt", {"model": trained.state_dict(), "step": 0})
    full, two = load_codec(exp), load_codec(exp, use_codebooks=2)
    assert (full.num_codebooks, two.num_codebooks) == (3, 2) and two.weights_sha256 == full.weights_sha256
    wav = torch.randn(1, 1000) * 0.1
    with torch.no_grad():
        tokens = full.encode(wav)
        assert torch.equal(two.encode(wav), tokens[:, :2])
        fewer = resynthesize(two, wav[0])
        assert torch.allclose(fewer, two.decode(tokens[:, :2])[0, :1000])  # the full set's first two codebooks
        assert not torch.allclose(fewer, resynthesize(full, wav[0]), atol=1e-3)  # the third one is left out
    with pytest.raises(TsekitError, match=rf"^{exp}: codec tsekit_codec: use_codebooks must be in 1..3, got 4$"):
        load_codec(exp, use_codebooks=4)
    for wrong in (2.5, "abc", True):
        with pytest.raises(TsekitError, match=rf"use_codebooks must be in 1..3, got {wrong!r}$"):
            load_codec(exp, use_codebooks=wrong)
    with pytest.raises(TsekitError, match="trained codec: of its parameters only use_codebooks may be set, not "
                                          "latent_dim"):
        load_codec(exp, latent_dim=4)


def test_unknown_codec_parameter_lists_the_valid_ones():
    with pytest.raises(TsekitError, match="unknown parameter 'widht'; valid: sample_rate"):
        build_codec("tsekit_vocoder", {"widht": 3})


def test_discriminators_judge_every_sub_discriminator_and_the_losses_separate_real_from_fake():
    discriminator = Discriminators(periods=(2, 3), period_channels=(4, 8), resolutions=((256, 64), (128, 32)),
                                   stft_channels=4)
    real, fake = torch.randn(2, 1000), torch.zeros(2, 1000)
    with torch.no_grad():
        judged_real, judged_fake = discriminator(real), discriminator(fake)
    assert len(judged_real) == 4  # 2 periods + 2 resolutions
    for logits, features in judged_real:
        assert logits.shape[0] == 2 and len(features) >= 4
    # a discriminator that scores real 1 and fake -1 has zero hinge loss; the generator then pays 2
    ones = [(torch.ones(2, 5), []) for _ in range(4)]
    minus = [(-torch.ones(2, 5), []) for _ in range(4)]
    assert float(discriminator_loss(ones, minus, "hinge")) == 0.0
    assert float(generator_adversarial_loss(minus, "hinge")) == 2.0
    zeros = [(torch.zeros(2, 5), []) for _ in range(4)]
    assert float(discriminator_loss(ones, zeros, "least_squares")) == 0.0
    assert float(generator_adversarial_loss(zeros, "least_squares")) == 1.0
    assert float(feature_matching_loss(judged_real, judged_real)) == 0.0
    assert float(feature_matching_loss(judged_real, judged_fake)) > 0.0
    # a few discriminator steps learn to tell the two apart
    optimizer = torch.optim.AdamW(discriminator.parameters(), lr=1e-3)
    before = float(discriminator_loss(judged_real, judged_fake))
    for _ in range(10):
        loss = discriminator_loss(discriminator(real), discriminator(fake))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert float(discriminator_loss(discriminator(real), discriminator(fake))) < before


def test_multi_scale_mel_loss_is_zero_for_the_same_signal():
    loss = MultiScaleMelLoss(8000, ((128, 32, 16), (256, 64, 20)))
    wav = torch.randn(2, 1000)
    assert float(loss(wav, wav)) == 0.0
    assert float(loss(wav * 0.5, wav)) > 0.1
