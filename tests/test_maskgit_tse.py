"""maskgit_tse: the mask schedule, the masked-token loss, iterative decoding, determinism, a decode test that
a constant predictor fails, the codec round trip behind ``extract``, and the trainer's token-grid check (the
token files themselves are checked against their codec.yaml when read: tests/test_tokenize.py)."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from tsekit import TsekitError
from tsekit.models.maskgit_tse import cosine_mask_ratio, draw_frame_mask, masked_token_loss
from tsekit.models.registry import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"num_codebooks": 2, "codebook_size": 8, "width": 32, "layers": 2, "heads": 2, "ff_mult": 2,
        "dropout": 0.0, "iterations": 4}


def tokens(size: int, codebooks: int, frames: int, vocabulary: int, seed: int) -> torch.Tensor:
    return torch.randint(vocabulary, (size, codebooks, frames), generator=torch.Generator().manual_seed(seed))


def batch_of(target: torch.Tensor, mixture: torch.Tensor, enroll: torch.Tensor) -> dict[str, torch.Tensor]:
    size = target.shape[0]
    return {"target_tokens": target, "mixture_tokens": mixture, "enroll_tokens": enroll,
            "target_tokens_lengths": torch.full((size,), target.shape[-1]),
            "enroll_tokens_lengths": torch.full((size,), enroll.shape[-1]), "mixture": torch.zeros(size, 1600)}


def test_cosine_schedule_ratios():
    u = torch.tensor([0.0, 1 / 3, 0.5, 1.0])
    expected = torch.tensor([1.0, math.cos(math.pi / 6), math.sqrt(0.5), 0.0])
    assert torch.allclose(cosine_mask_ratio(u), expected, atol=1e-6)


def test_frame_masks_follow_the_schedule_and_skip_padding():
    torch.manual_seed(0)
    lengths = torch.tensor([40, 25, 1] * 2000)
    valid = torch.arange(40)[None] < lengths[:, None]
    masked = draw_frame_mask(valid)
    assert not (masked & ~valid).any()
    counts = masked.sum(1)
    assert (counts >= 1).all() and (counts <= lengths).all()
    # E[cos(pi u / 2)] = 2 / pi for u ~ U(0, 1); ceil adds up to one frame
    fraction = (counts[lengths == 40].float() / 40).mean().item()
    assert 2 / math.pi < fraction < 2 / math.pi + 1 / 40 + 0.02
    full = (counts[lengths == 40] == 40).float().mean().item()  # ratio > 39/40, i.e. u < 2/pi acos(39/40)
    assert abs(full - 2 / math.pi * math.acos(39 / 40)) < 0.02


def test_loss_counts_masked_positions_only():
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 5, 8)
    targets = torch.randint(8, (3, 2, 5))
    masked = torch.rand(3, 2, 5) < 0.5
    masked[:, 0, 0] = True
    loss = masked_token_loss(logits, targets, masked)
    changed = logits.clone()
    changed[~masked] = torch.randn_like(changed[~masked]) * 10
    assert torch.allclose(masked_token_loss(changed, targets, masked), loss)
    changed = logits.clone()
    changed[masked] += torch.randn_like(changed[masked])
    assert not torch.allclose(masked_token_loss(changed, targets, masked), loss)
    ce = torch.nn.functional.cross_entropy(logits[0][masked[0]], targets[0][masked[0]])
    assert torch.allclose(loss[0], ce)


@pytest.mark.parametrize("params", [{}, {"guidance_scale": 1.5}, {"enroll_conditioning": "cross"},
                                    {"block": "conformer", "conv_kernel": 3}])
def test_inference_calls_the_network_k_times_and_masks_nothing_at_the_end(params):
    model = build_model("maskgit_tse", {**TINY, **params, "iterations": 5}).eval()
    calls = []
    model.network.register_forward_hook(lambda *args: calls.append(1))
    out = model.generate(tokens(2, 2, 13, 8, 0), tokens(2, 2, 7, 8, 1))
    assert len(calls) == 5
    assert out.shape == (2, 2, 13) and out.min() >= 0 and out.max() < 8  # 8 is the mask entry


def test_coarse_to_fine_fills_level_0_in_k_steps_and_the_others_in_one():
    model = build_model("maskgit_tse", {**TINY, "num_codebooks": 3, "prediction": "coarse_to_fine"}).eval()
    calls = []
    model.network.register_forward_hook(lambda *args: calls.append(1))
    out = model.generate(tokens(1, 3, 9, 8, 0), tokens(1, 3, 4, 8, 1))
    assert len(calls) == 4 + 2 and out.max() < 8
    model.train()
    loss = model(batch_of(tokens(2, 3, 9, 8, 2), tokens(2, 3, 9, 8, 3), tokens(2, 3, 4, 8, 4)))["objective"]
    assert loss.shape == (2,) and torch.isfinite(loss).all()


def test_same_seed_same_tokens_and_another_seed_others():
    model = build_model("maskgit_tse", {**TINY, "codebook_size": 64, "seed": 3}).eval()
    mixture, enroll = tokens(2, 2, 30, 64, 0), tokens(2, 2, 10, 64, 1)
    first = model.generate(mixture, enroll)
    assert torch.equal(first, model.generate(mixture, enroll))
    model.seed = 4
    assert not torch.equal(first, model.generate(mixture, enroll))


VOCABULARY = 4  # small, so that the sum below is learned in a few hundred steps whatever the seed


def decode_accuracy(model, mixture: torch.Tensor, enroll: torch.Tensor) -> float:
    return (model.generate(mixture, enroll) == (mixture + enroll[:, :, :1]) % VOCABULARY).float().mean().item()


def test_a_trained_model_decodes_a_task_that_needs_both_cues_and_a_constant_predictor_does_not():
    """The target is the mixture's tokens shifted by the enrollment's first token (mod 4): solvable only by
    reading the mixture frame by frame and attending to the enrollment. Seeds 0-3 decode 98-100% of it."""
    torch.manual_seed(0)
    model = build_model("maskgit_tse", {**TINY, "codebook_size": VOCABULARY, "width": 64, "heads": 4,
                                        "enroll_drop": 0.0})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(400):
        mixture, enroll = tokens(16, 2, 12, VOCABULARY, 2 * step), tokens(16, 2, 3, VOCABULARY, 2 * step + 1)
        loss = model(batch_of((mixture + enroll[:, :, :1]) % VOCABULARY, mixture, enroll))["objective"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.3 * sum(losses[:20]) / 20
    model.eval()
    mixture, enroll = tokens(32, 2, 12, VOCABULARY, 10**6), tokens(32, 2, 3, VOCABULARY, 10**6 + 1)
    assert decode_accuracy(model, mixture, enroll) > 0.9  # chance: 1/4

    class Constant(torch.nn.Module):  # the stub this test must catch: always the same token
        def forward(self, target, *args):
            logits = torch.zeros(*target.shape, VOCABULARY)
            logits[..., 0] = 1.0
            return logits

    model.network = Constant()
    assert decode_accuracy(model, mixture, enroll) < 0.4


def test_extract_goes_through_the_codec_and_keeps_the_mixture_length():
    codec_params = {"sample_rate": 8000, "n_mels": 20, "n_fft": 256, "hop_length": 64, "downsample": 1,
                    "encoder_width": 16, "encoder_blocks": 1, "latent_dim": 8, "num_codebooks": 2, "codebook_size": 8,
                    "decoder_width": 16, "decoder_blocks": 1}
    model = build_model("maskgit_tse", {**TINY, "sample_rate": 16000, "features": "mel", "mel_hop": 128,
                                        "mel_bins": 20, "codec": "tsekit_codec", "codec_params": codec_params}).eval()
    calls = []
    model.network.register_forward_hook(lambda *args: calls.append(args[1][0].shape))
    mixture, enroll = 0.1 * torch.randn(2, 3000), 0.1 * torch.randn(2, 2000)
    out = model.extract(mixture, enroll)
    assert out.shape == (2, 3000) and torch.isfinite(out).all()
    assert calls[0][-1] == math.ceil(1500 / 64)  # frames of the mixture resampled to the codec's 8 kHz
    assert torch.equal(out, model.extract(mixture, enroll))
    assert not any(key.startswith("codec") or "._codec" in key for key in model.state_dict())  # not saved
    wrong = build_model("maskgit_tse", {**TINY, "codebook_size": 16, "codec": "tsekit_codec",
                                        "codec_params": codec_params})
    with pytest.raises(TsekitError, match="codec tsekit_codec has 2 codebooks of 8; the model was trained for 2 of 16"):
        wrong.extract(mixture, enroll)


CODEC = {"sample_rate": 16000, "n_mels": 20, "n_fft": 256, "hop_length": 128, "downsample": 2, "encoder_width": 16,
         "encoder_blocks": 1, "latent_dim": 8, "num_codebooks": 2, "codebook_size": 16, "decoder_width": 16,
         "decoder_blocks": 1, "kmeans_iters": 0}


def recipe_config() -> dict:
    """maskgit_tse through the codec exp/codec, with its tokens in dump/codec: paths as a recipe's conf/ has them."""
    return {"model": {"name": "maskgit_tse", "params": {**TINY, "codebook_size": 16, "features": "mel",
                                                        "mel_hop": 256, "mel_bins": 20}},
            "codec": {"spec": "exp/codec"},
            "data": {"sample_rate": 16000, "chunk_seconds": 0.5, "enroll": "sampled", "enroll_seconds": 0.5,
                     "batch_size": 4, "num_workers": 0, "tokens": "dump/codec"},
            "loss": [{"name": "objective", "output": "objective"}],
            "scheduler": {"name": "none"}, "train": {"epochs": 1, "keep_best": 1}}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """A recipe folder after stages 1-4 of maskgit_tse, each run from inside it with the recipe's relative paths:
    data/, exp/codec (a toolkit codec as tsekit codec train leaves it, with random weights), dump/codec/<set>
    (its tokens), exp/maskgit (trained through it)."""
    from corpus_trees import make_libri2mix_tree
    from trained import codec_experiment

    from tsekit.codec.tokenize import tokenize_data_dir
    from tsekit.corpora.librimix import prepare_libri2mix
    from tsekit.data.enroll import enroll_data_dir
    from tsekit.train.config import config_from_dict
    from tsekit.train.trainer import train

    root = tmp_path_factory.mktemp("recipe")
    make_libri2mix_tree(root / "Libri2Mix", rates=(16000,), splits=("train-100", "dev"), per_split=16)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        prepare_libri2mix(root / "Libri2Mix", Path("data"), sample_rate=16000, splits=("train-100", "dev"))
        codec_experiment(Path("exp/codec"), "tsekit_codec", CODEC, seed=0)
        for split in ("train-100", "dev"):
            enroll_data_dir(Path("data") / split)
            tokenize_data_dir("exp/codec", Path("data") / split, Path("dump/codec") / split)
        train(config_from_dict(recipe_config()), Path("data/train-100"), Path("data/dev"), Path("exp/maskgit"),
              device="cpu")
    return root


def test_trains_through_the_trainer_on_tokenized_data_dirs_and_infers_from_any_directory(recipe, tmp_path,
                                                                                        monkeypatch):
    """Tokenize, train, infer: the config's codec reaches the model, which finds it from another directory."""
    import soundfile as sf
    import yaml

    from tsekit.codec.registry import load_codec
    from tsekit.data.table import read_table
    from tsekit.infer import infer_data_dir
    from tsekit.train.config import config_from_dict
    from tsekit.train.trainer import train

    infer_data_dir(recipe / "exp" / "maskgit", recipe / "data" / "dev", tmp_path / "decode")  # from the tests' cwd
    estimates, mixtures = read_table(tmp_path / "decode" / "wav.scp"), read_table(recipe / "data" / "dev" / "wav.scp")
    assert set(estimates) == set(mixtures)
    for utt, path in estimates.items():
        assert sf.info(path).frames == sf.info(mixtures[utt]).frames
    saved = yaml.safe_load((recipe / "exp" / "maskgit" / "stage1" / "config.yaml").read_text())["model"]["params"]
    # the codec relative to the stage folder, and known by its weights
    assert saved["codec"] == "../../codec" and saved["codec_params"] == {}
    assert saved["codec_sha256"] == load_codec(recipe / "exp" / "codec").weights_sha256
    # a model built for another token grid than the codec of data.tokens: one line naming its codec.yaml
    config = recipe_config()
    config["model"]["params"]["codebook_size"] = 32
    monkeypatch.chdir(recipe)
    with pytest.raises(TsekitError, match=r"dump/codec/train-100/codec.yaml: tokens of 2 codebooks of 16, but "
                                          r"model.params has num_codebooks 2 and codebook_size 32"):
        train(config_from_dict(config), Path("data/train-100"), Path("data/dev"), tmp_path / "exp2", device="cpu")


def test_an_experiment_loads_after_its_recipe_moves_and_refuses_a_retrained_codec(recipe, tmp_path, monkeypatch):
    from trained import codec_experiment

    from tsekit import checkpoint as ckpt
    from tsekit.codec.registry import load_codec
    from tsekit.train.experiment import load_experiment

    shutil.copytree(recipe, tmp_path / "before")
    (tmp_path / "before").rename(tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    mixture, enroll = 0.1 * torch.randn(1, 4000), 0.1 * torch.randn(1, 4000)
    model, cfg = load_experiment("moved/exp/maskgit")
    assert model.extract(mixture, enroll).shape == (1, 4000)
    assert cfg.model.params["codec"] == os.path.join("moved", "exp", "codec")
    # the codec retrained in its place: one line naming it and both hashes
    trained = load_codec("moved/exp/codec").weights_sha256
    codec_experiment(Path("moved/exp/codec"), "tsekit_codec", CODEC, seed=1)
    with pytest.raises(TsekitError) as err:
        load_experiment("moved/exp/maskgit")[0].extract(mixture, enroll)
    retrained = load_codec("moved/exp/codec").weights_sha256
    assert str(err.value).startswith(f"maskgit_tse: codec {os.path.join('moved', 'exp', 'codec')} holds weights "
                                     f"sha256 {retrained[:16]}, but the experiment was trained through weights sha256 "
                                     f"{trained[:16]}") and "\n" not in str(err.value)
    # an experiment written before paths and hashes were recorded: exp/codec as the recipe folder saw it
    averaged = Path("moved/exp/maskgit/stage1/checkpoints/averaged.pt")
    state = ckpt.load_checkpoint(averaged)
    state["config"]["model"]["params"]["codec"] = "exp/codec"
    del state["config"]["model"]["params"]["codec_sha256"]
    ckpt.save_checkpoint(averaged, state)
    model, cfg = load_experiment("moved/exp/maskgit")
    assert cfg.model.params["codec"] == str(tmp_path / "moved" / "exp" / "codec")
    assert model.extract(mixture, enroll).shape == (1, 4000)


def test_tokens_of_another_codec_than_the_experiments_are_refused_before_training(recipe, tmp_path, monkeypatch):
    from trained import codec_experiment

    from tsekit.codec.registry import load_codec
    from tsekit.data.tokens import read_codec_info
    from tsekit.train.config import config_from_dict
    from tsekit.train.trainer import train

    shutil.copytree(recipe, tmp_path / "recipe")
    monkeypatch.chdir(tmp_path / "recipe")
    codec_experiment(Path("exp/codec"), "tsekit_codec", CODEC, seed=1)
    with pytest.raises(TsekitError) as err:
        train(config_from_dict(recipe_config()), Path("data/train-100"), Path("data/dev"), Path("exp/again"),
              device="cpu")
    tokens, retrained = read_codec_info("dump/codec/train-100"), load_codec("exp/codec").weights_sha256
    assert str(err.value).startswith(
        f"{os.path.join('dump', 'codec', 'train-100', 'codec.yaml')}: tokens of {tokens['codec']} with weights sha256 "
        f"{tokens['weights_sha256'][:16]}, but codec {os.path.join('exp', 'codec')} holds weights sha256 "
        f"{retrained[:16]}") and "\n" not in str(err.value)
    assert not Path("exp/again/stage1/checkpoints").exists()


def network_logits(network, mixture: torch.Tensor, enroll: torch.Tensor, skip: int, enroll_skip: int) -> torch.Tensor:
    """The network's logits for all-masked target frames over ``mixture`` (B, K, F) given ``enroll`` (B, K, Fe),
    with the target placed after ``skip`` padded frames and the enrollment after ``enroll_skip``."""
    size, codebooks, frames = mixture.shape
    pad = torch.zeros(size, codebooks, skip, dtype=torch.long)
    enroll_pad = torch.zeros(size, codebooks, enroll_skip, dtype=torch.long)
    target = torch.full((size, codebooks, skip + frames), network.codebook_size)
    padding = (torch.arange(skip + frames) < skip)[None].expand(size, -1)
    enroll_padding = (torch.arange(enroll_skip + enroll.shape[-1]) < enroll_skip)[None].expand(size, -1)
    logits = network(target, padding, torch.cat([pad, mixture], -1), torch.cat([enroll_pad, enroll], -1),
                     enroll_padding, torch.zeros(size, dtype=torch.bool), None)
    return logits[..., skip:, :]


@pytest.mark.parametrize("conditioning", ["prefix", "cross"])
def test_relative_positions_make_logits_independent_of_where_the_frames_sit(conditioning):
    """With ``positions: relative`` no frame index enters the network, only distances within the target and
    within the enrollment, so frames at indices never reached in training (a 4 x longer inference chunk, a
    whole enrollment) are computed as frames at the start; absolute positions differ there."""
    mixture, enroll = tokens(2, 2, 20, 8, 0), tokens(2, 2, 6, 8, 1)
    for positions, same in (("relative", True), ("absolute", False)):
        torch.manual_seed(0)
        network = build_model("maskgit_tse", {**TINY, "enroll_conditioning": conditioning,
                                              "positions": positions}).eval().network
        start = network_logits(network, mixture, enroll, 0, 0)
        later = network_logits(network, mixture, enroll, 150, 40)
        assert torch.allclose(start, later, atol=1e-5) == same, positions


def test_the_recipes_decode_with_relative_positions():
    """The recipes train on 2-3 s crops and decode 4 x longer chunks with whole enrollments: their configs use
    relative positions (docs/RESULTS.md: maskgit_tse at the training and the inference lengths)."""
    import yaml

    egs = Path(__file__).resolve().parents[1] / "egs"
    for config in ("mini_libri2mix/conf/maskgit_tse.yaml", "mini_libri2mix/conf/maskgit_tse_c2f.yaml",
                   "libri2mix/conf/maskgit_tse.yaml"):
        params = yaml.safe_load((egs / config).read_text())["model"]["params"]
        assert params.get("positions") == "relative", config
