"""Experiment configs: defaults, YAML round trip, overrides, and every validation error naming its key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from tsekit import TsekitError
from tsekit.models.registry import MODELS, TSEModel, register
from tsekit.train.config import (
    ExperimentConfig,
    InferConfig,
    LossTerm,
    ModelConfig,
    config_from_dict,
    load_config,
    save_config,
)
from tsekit.typed_config import config_to_dict, format_config

MODEL = "config_test_model"
STRICT_MODEL = "config_test_strict_model"

if MODEL not in MODELS:  # the module may be imported twice (e.g. pytest --import-mode variations)

    @register(MODEL)
    class TinyModel(TSEModel):
        """A stand-in registered model, so these tests do not depend on the real systems."""

        def __init__(self, hidden: int = 4, scale: float = 1.0, kernels: tuple[int, ...] = (3, 5),
                     num_speakers: int = 2):
            super().__init__()
            self.layer = torch.nn.Linear(hidden, hidden)

        def forward(self, batch):
            return {"estimate": batch["mixture"]}

    @register(STRICT_MODEL)
    class StrictModel(TSEModel):
        """A model with a required constructor argument."""

        def __init__(self, channels: int, num_speakers: int):
            super().__init__()

        def forward(self, batch):
            return {"estimate": batch["mixture"]}


BASE = f"""
model:
  name: {MODEL}
  params:
    hidden: 8
optim:
  lr: 1e-3
"""


def write(tmp_path: Path, text: str = BASE, name: str = "conf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path, overrides=()) -> str:
    with pytest.raises(TsekitError) as info:
        load_config(path, list(overrides))
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------------------ defaults


def test_defaults_are_what_a_speech_researcher_expects(tmp_path):
    cfg = load_config(write(tmp_path, f"model: {{name: {MODEL}}}\n"), [])
    assert cfg.model == ModelConfig(MODEL, {})
    d = cfg.data
    assert (d.sample_rate, d.chunk_seconds, d.enroll, d.enroll_seconds) == (16000, 4.0, "fixed", None)
    assert (d.dynamic_mixing, d.dm_sir_range, d.dm_noise, d.dm_snr_range) == (False, (-5.0, 5.0), False, (0.0, 20.0))
    assert (d.batch_size, d.valid_batch_size, d.num_workers) == (8, 1, 2)
    assert (d.absent_fraction, d.silent_fraction, d.absent_in_valid) == (0.0, 0.0, False)  # present targets only
    o = cfg.optim
    assert (o.name, o.lr, o.weight_decay, o.betas, o.eps, o.grad_clip) == ("adam", 1e-3, 0.0, (0.9, 0.999), 1e-8, 5.0)
    s = cfg.scheduler
    assert (s.name, s.factor, s.patience, s.decay) == ("plateau", 0.5, 2, "cosine")
    t = cfg.train
    assert (t.epochs, t.seed, t.amp, t.keep_best, t.valid_metric) == (100, 0, True, 5, "loss")
    assert (t.max_nonfinite, t.max_steps_per_epoch, t.save_interval) == (100, None, 0)
    assert cfg.stage2.init_from is None and cfg.stage2.freeze == []


@pytest.mark.parametrize("text, expected", [
    ("", "mixture_fit"),  # SpEx+'s SI-SDR loss leaves the scale free
    ("loss: [{name: snr}]", "none"),
    ("loss: [{name: snr}, {name: si_sdr, output: estimate_middle}]", "none"),  # only the estimate counts
    # two stages: the last one decides (pos/neg: distillation, then the extractor's loss)
    ("loss: [{name: snr}]\nstage2: {enabled: true, loss: [{name: si_sdr}]}", "mixture_fit"),
    ("stage2: {enabled: true, loss: [{name: snr}]}", "none"),
    ("loss: [{name: snr}]\ninfer: {output_level: peak}", "peak"),  # a value given is kept
    ("loss: [{name: tsnr}]\ndata: {absent_fraction: 0.2}", "none"),  # the thresholded SNR learns the level
])
def test_output_level_defaults_from_the_loss_and_is_recorded(tmp_path, text, expected):
    path = write(tmp_path, f"model: {{name: {MODEL}}}\n{text}\n")
    cfg = load_config(path, [])
    assert cfg.infer.output_level == expected
    save_config(cfg, tmp_path / "saved.yaml")  # the experiment's config.yaml names the choice
    assert yaml.safe_load((tmp_path / "saved.yaml").read_text())["infer"]["output_level"] == expected


def test_output_level_values_are_checked(tmp_path):
    path = write(tmp_path, f"model: {{name: {MODEL}}}\n")
    with pytest.raises(TsekitError, match="infer.output_level"):
        load_config(path, ["infer.output_level=loud"])
    with pytest.raises(TsekitError, match=r"infer.peak: must be in \(0, 1\]"):
        load_config(path, ["infer.peak=2"])


@pytest.mark.parametrize("params, expected", [
    ("{name: zspex, params: {mask_inputs: both}}", "model.params.mask_inputs: expected one of scales, extractor"),
    ("{name: tfgridnet_posneg, params: {level_norm: rms}}",
     "model.params.level_norm: expected one of utterance, running, none or null"),
])
def test_a_model_choice_outside_its_literal_names_the_file_and_key(tmp_path, params, expected):
    with pytest.raises(TsekitError, match=re.escape(f"{tmp_path / 'conf.yaml'}: {expected}")):
        load_config(write(tmp_path, f"model: {params}\n"), [])


def test_default_loss_is_spex_plus(tmp_path):
    cfg = load_config(write(tmp_path, f"model: {{name: {MODEL}}}\n"), [])
    assert [(t.label, t.weight) for t in cfg.loss] == [
        ("si_sdr@estimate", 0.8), ("si_sdr@estimate_middle", 0.1), ("si_sdr@estimate_long", 0.1),
        ("speaker_ce@speaker_logits", 0.5)]
    assert all(t.target == "target" for t in cfg.loss)


def test_loss_term_label_names_a_non_default_target():
    assert LossTerm("snr", "estimate", 1.0, target="teacher").label == "snr@estimate:teacher"


# ------------------------------------------------------------------------------------------------ round trip


def test_save_and_load_round_trip(tmp_path):
    cfg = load_config(write(tmp_path), ["train.epochs=3", "stage2.freeze=[encoder, speaker_encoder]",
                                        "model.params.kernels=[3, 7, 9]"])
    out = tmp_path / "exp" / "stage1" / "config.yaml"
    save_config(cfg, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["config.yaml"]  # no temp file left behind
    again = load_config(out, [])
    assert again == cfg
    assert again.model.params["kernels"] == (3, 7, 9)
    assert out.read_text() == format_config(cfg)
    # every key is written out: the saved file alone describes the experiment
    saved = yaml.safe_load(out.read_text())
    assert list(saved) == ["model", "data", "loss", "optim", "scheduler", "train", "stage2", "distill", "infer",
                           "codec", "vocoder"]
    assert saved["train"]["max_steps_per_epoch"] is None and saved["optim"]["betas"] == [0.9, 0.999]


def test_print_config_output_parses_back_to_the_same_config(tmp_path):
    cfg = load_config(write(tmp_path), ["data.dm_sir_range=[-3, 3]", "scheduler.name=warmup_decay",
                                        "scheduler.min_lr=1e-6", "optim.name=adamw"])
    text = format_config(cfg)
    assert config_from_dict(yaml.safe_load(text)) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert "dm_sir_range: [-3.0, 3.0]" in text  # short lists stay on one line


def test_cli_print_config_is_the_resolved_config(tmp_path):
    from tsekit.cli import cli

    path = write(tmp_path)
    result = CliRunner().invoke(cli, ["train", "--config", str(path), "--print-config", "optim.lr=5e-4"])
    assert result.exit_code == 0, result.output
    assert config_from_dict(yaml.safe_load(result.output)) == load_config(path, ["optim.lr=5e-4"])
    bad = CliRunner().invoke(cli, ["train", "--config", str(path), "--print-config", "optim.lrate=5e-4"])
    assert isinstance(bad.exception, TsekitError) and "unknown key 'optim.lrate'" in str(bad.exception)



def test_cli_print_value_prints_one_setting_as_a_shell_reads_it(tmp_path):
    from tsekit.cli import cli

    path = write(tmp_path)

    def value(key: str, *overrides: str) -> str:
        result = CliRunner().invoke(cli, ["train", "--config", str(path), "--print-value", key, *overrides])
        assert result.exit_code == 0, result.output
        return result.output

    assert value("distill.teacher") == "\n"  # null: empty, so `[ -n "$teacher" ]` is false
    assert value("distill.teacher", "distill.teacher=exp/my teacher") == "exp/my teacher\n"
    assert value("stage2.enabled", "stage2.enabled=true") == "true\n"
    assert value("optim.lr", "optim.lr=5e-4") == "0.0005\n"
    assert value("optim.betas") == "[0.9, 0.999]\n"
    bad = CliRunner().invoke(cli, ["train", "--config", str(path), "--print-value", "distill.nope"])
    assert isinstance(bad.exception, TsekitError) and "config has no distill.nope: distill has teacher" in str(
        bad.exception)

# ------------------------------------------------------------------------------------------------ overrides


def test_overrides_nested_lists_and_floats_from_ints(tmp_path):
    cfg = load_config(write(tmp_path), [
        "optim.lr=1",                      # int where a float is expected
        "model.params.hidden=10",
        "model.params.scale=2",            # float param given as int
        "data.dm_sir_range=[-3,3]",
        "data.enroll=sampled",
        "data.enroll_seconds=3",
        "loss.1.weight=0.2",               # an item of the default loss list
        "train.max_steps_per_epoch=20",
        "stage2.init_from=exp/a/stage1/checkpoints/best.pt",
    ])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.model.params == {"hidden": 10, "scale": 2.0}
    assert isinstance(cfg.model.params["scale"], float)
    assert cfg.data.dm_sir_range == (-3.0, 3.0) and cfg.data.enroll == "sampled"
    assert cfg.data.enroll_seconds == 3.0 and isinstance(cfg.data.enroll_seconds, float)
    assert [t.weight for t in cfg.loss] == [0.8, 0.2, 0.1, 0.5]
    assert cfg.train.max_steps_per_epoch == 20
    assert cfg.stage2.init_from == "exp/a/stage1/checkpoints/best.pt"
    assert cfg.data.batch_size == 8  # untouched keys keep their values


def test_overrides_apply_in_order_and_can_reset_to_null(tmp_path):
    cfg = load_config(write(tmp_path), ["optim.lr=0.1", "optim.lr=0.01", "data.chunk_seconds=null",
                                        "train.valid_metric=si_sdr@estimate"])
    assert cfg.optim.lr == 0.01 and cfg.data.chunk_seconds is None
    assert cfg.train.valid_metric == "si_sdr@estimate"


def test_override_replaces_a_whole_list(tmp_path):
    cfg = load_config(write(tmp_path), ["loss=[{name: snr, output: estimate}, {name: si_sdr, weight: 0.5}]"])
    assert [(t.label, t.weight) for t in cfg.loss] == [("snr@estimate", 1.0), ("si_sdr@estimate", 0.5)]


def test_override_may_supply_what_the_file_lacks(tmp_path):
    cfg = load_config(write(tmp_path, "train: {epochs: 2}\n"),
                      [f"model.name={STRICT_MODEL}", "model.params.channels=16"])
    assert cfg.model == ModelConfig(STRICT_MODEL, {"channels": 16})  # num_speakers is filled by the trainer
    assert cfg.train.epochs == 2


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; a float field takes it anyway
    assert yaml.safe_load("lr: 1e-3")["lr"] == "1e-3"
    assert load_config(write(tmp_path), []).optim.lr == 0.001


def test_config_from_dict_validates_too():
    # validation also resolves the output level left null (from the default SI-SDR loss)
    assert config_from_dict({"model": {"name": MODEL}}) == ExperimentConfig(ModelConfig(MODEL),
                                                                            infer=InferConfig("mixture_fit"))
    with pytest.raises(TsekitError, match=r"^exp/config.yaml: unknown key 'data.rate'"):
        config_from_dict({"model": {"name": MODEL}, "data": {"rate": 8000}}, source="exp/config.yaml")


# ------------------------------------------------------------------------------------------------ errors

TOP_KEYS = "model, data, loss, optim, scheduler, train, stage2"
OPTIM_KEYS = "name, lr, weight_decay, betas, eps, grad_clip"


@pytest.mark.parametrize("extra, expected", [
    ("optimizer: {lr: 1}", f"unknown key 'optimizer'; valid keys at the top level: {TOP_KEYS}"),
    ("optim: {lrate: 1}", f"unknown key 'optim.lrate'; valid keys under 'optim': {OPTIM_KEYS}"),
    ("loss: [{name: si_sdr}, {name: snr, wieght: 1}]",
     "unknown key 'loss.1.wieght'; valid keys under 'loss.1': name, output, weight, target"),
    ("data: {batch_size: four}", "data.batch_size: expected int, got str 'four'"),
    ("data: {batch_size: true}", "data.batch_size: expected int, got bool True"),
    ("data: {batch_size: 2.5}", "data.batch_size: expected int, got float 2.5"),
    ("train: {amp: 1}", "train.amp: expected bool, got int 1"),
    ("data: {chunk_seconds: long}", "data.chunk_seconds: expected float or null, got str 'long'"),
    ("data: {dm_sir_range: 5}", "data.dm_sir_range: expected a list of 2 float, got int 5"),
    ("data: {dm_sir_range: [1, 2, 3]}", "data.dm_sir_range: expected a list of 2 float, got list [1, 2, 3]"),
    ("data: {dm_snr_range: [0, high]}", "data.dm_snr_range.1: expected float, got str 'high'"),
    ("data: 5", "data: expected a mapping, got int 5"),
    ("data: {enroll: random}", "data.enroll: expected one of fixed, sampled, target, got 'random'"),
    ("optim: {name: sgd}", "optim.name: expected one of adam, adamw, got 'sgd'"),
    ("stage2: {freeze: encoder}", "stage2.freeze: expected a list of str, got str 'encoder'"),
    ("loss: [{output: estimate}]", "missing key 'loss.0.name'"),
    ("loss: [{name: l1}]",
     "loss.0.name: unknown loss 'l1'; valid losses: distill, objective, si_sdr, snr, speaker_ce, tsnr"),
    ("loss: []", "loss: needs at least one term"),
    ("loss: [{name: si_sdr}, {name: si_sdr, weight: 2}]", "loss.1: a second 'si_sdr@estimate' term"),
    ("loss: [{name: si_sdr, weight: -1}]", "loss.0.weight: must be >= 0, got -1.0"),
    ("train: {valid_metric: si_sdr}", "train.valid_metric: expected one of loss, si_sdr@estimate, "
                                      "si_sdr@estimate_middle, si_sdr@estimate_long, speaker_ce@speaker_logits;"
                                      " got 'si_sdr'"),
    ("data: {dm_sir_range: [5, -5]}", "data.dm_sir_range: must be [low, high] with low <= high, got [5.0, -5.0]"),
    ("data: {batch_size: 0}", "data.batch_size: must be >= 1, got 0"),
    ("optim: {lr: 0}", "optim.lr: must be > 0, got 0.0"),
    ("optim: {betas: [0.9, 1.5]}", "optim.betas: must be two values in [0, 1), got [0.9, 1.5]"),
    ("scheduler: {factor: 2}", "scheduler.factor: must be in (0, 1), got 2.0"),
    ("scheduler: {name: warmup_decay, decay: exponential}",
     "scheduler.min_lr: must be > 0 for exponential decay"),
    ("train: {epochs: 0}", "train.epochs: must be >= 1, got 0"),
    ("data: {absent_fraction: 1.5}", "data.absent_fraction: must be in [0, 1] (0 = off), got 1.5"),
    ("data: {silent_fraction: -0.1}", "data.silent_fraction: must be in [0, 1] (0 = off), got -0.1"),
    ("data: {absent_fraction: 0.6, silent_fraction: 0.5}", "data.silent_fraction: must be <= 1 - "
                                                           "data.absent_fraction (0.4)"),
    # SpEx+'s default loss is SI-SDR: undefined on an absent target's silence
    ("data: {absent_fraction: 0.2}", "loss.0.name: si_sdr is undefined on the silent target of an absent-target"
                                     " example (data.absent_fraction 0.2); use tsnr"),
    ("data: {absent_fraction: 0.2}\nloss: [{name: tsnr}]\nstage2: {enabled: true, loss: [{name: snr}]}",
     "stage2.loss.0.name: snr is undefined on the silent target"),
    ("loss: [{name: tsnr, snr_max: 0}]", "loss.0.snr_max: must be > 0 (dB), got 0.0"),
])
def test_file_errors_name_the_file_and_the_key(tmp_path, extra, expected):
    path = write(tmp_path, f"model: {{name: {MODEL}}}\n{extra}\n")
    message = load_error(path)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message


@pytest.mark.parametrize("text, expected", [
    ("model: {params: {}}", "missing key 'model.name'"),
    ("data: {}", "missing key 'model'"),
    ("model: {name: no_such_model}", "model.name: unknown model 'no_such_model'; registered models: "),
    (f"model: {{name: {MODEL}, params: {{hiden: 3}}}}",
     f"unknown key 'model.params.hiden'; valid parameters of model {MODEL}: hidden, scale, kernels, num_speakers"),
    (f"model: {{name: {MODEL}, params: {{hidden: big}}}}", "model.params.hidden: expected int, got str 'big'"),
    (f"model: {{name: {MODEL}, params: {{kernels: [3, x]}}}}", "model.params.kernels.1: expected int, got str 'x'"),
    (f"model: {{name: {STRICT_MODEL}}}", f"missing key 'model.params.channels' (model {STRICT_MODEL} has no default"),
])
def test_model_errors(tmp_path, text, expected):
    path = write(tmp_path, text + "\n")
    message = load_error(path)
    assert message.startswith(f"{path}: ") and expected in message, message


def test_unknown_model_lists_the_registered_ones(tmp_path):
    message = load_error(write(tmp_path, "model: {name: nope}\n"))
    listed = message.split("registered models: ")[1].split(", ")
    assert MODEL in listed and STRICT_MODEL in listed


@pytest.mark.parametrize("override, expected", [
    ("optim.lrate=5e-4", f"unknown key 'optim.lrate'; valid keys under 'optim': {OPTIM_KEYS}"),
    ("trainer.epochs=3", f"unknown key 'trainer'; valid keys at the top level: {TOP_KEYS}"),
    ("loss.0.wieght=1", "unknown key 'loss.0.wieght'; valid keys under 'loss.0': name, output, weight, target"),
    ("model.params.hiden=3", f"unknown key 'model.params.hiden'; valid parameters of model {MODEL}: hidden"),
    ("data.batch_size=1.5", "data.batch_size: expected int, got float 1.5"),
    ("data.dm_sir_range=[1]", "data.dm_sir_range: expected a list of 2 float, got list [1]"),
    ("model.params.hidden=[1,2]", "model.params.hidden: expected int, got list [1, 2]"),
    ("data.enroll=random", "data.enroll: expected one of fixed, sampled, target, got 'random'"),
    ("optim.lr", "expected key.sub=value"),
    ("optim..lr=1", "expected key.sub=value"),
    ("=1", "expected key.sub=value"),
    ("optim.lr=[1", "value is not valid YAML"),
    ("loss.4.weight=1", "loss.4: loss is a list of 4 items; use an index 0..3 or set the whole list"),
    ("loss.first.weight=1", "loss.first: loss is a list of 4 items"),
    ("optim.lr.value=1", "optim.lr.value: optim.lr is a single value (float), it has no keys"),
    ("model.name=no_such_model", "model.name: unknown model 'no_such_model'"),
    ("loss.0.name=l1",
     "loss.0.name: unknown loss 'l1'; valid losses: distill, objective, si_sdr, snr, speaker_ce, tsnr"),
])
def test_override_errors_name_the_override_and_the_key(tmp_path, override, expected):
    message = load_error(write(tmp_path), ["train.epochs=2", override, "train.seed=3"])
    assert message.startswith(f"override {override!r}: "), message
    assert expected in message, message


def test_cross_field_problem_is_blamed_on_the_override_that_caused_it(tmp_path):
    message = load_error(write(tmp_path), ["scheduler.name=warmup_decay", "scheduler.decay=exponential"])
    assert message.startswith("override 'scheduler.decay=exponential': scheduler.min_lr: must be > 0"), message


def test_file_problem_is_blamed_on_the_file_even_with_overrides(tmp_path):
    path = write(tmp_path, BASE + "data: {batch_size: 0}\n")
    message = load_error(path, ["data.num_workers=0", "optim.lr=0.1"])
    assert message == f"{path}: data.batch_size: must be >= 1, got 0"


def test_override_below_a_section_that_is_not_a_mapping_in_the_file(tmp_path):
    path = write(tmp_path, BASE + "data: 5\n")
    message = load_error(path, ["data.batch_size=2"])
    assert message == f"{path}: data: expected a mapping, got int 5"


@pytest.mark.parametrize("text, expected", [
    ("model: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping of sections (model, data, loss"),
])
def test_bad_files(tmp_path, text, expected):
    path = write(tmp_path, text)
    message = load_error(path)
    assert message.startswith(f"{path}: ") and expected in message, message


def test_missing_file(tmp_path):
    message = load_error(tmp_path / "nope.yaml")
    assert re.fullmatch(rf"{re.escape(str(tmp_path / 'nope.yaml'))}: config file not found", message)


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parent.parent.glob("egs/*/conf/*.yaml")),
                         ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_recipe_config_loads(path):
    if "model" not in yaml.safe_load(path.read_text()):  # a codec's or vocoder's config (tsekit codec train)
        from tsekit.codec.registry import build_codec
        from tsekit.codec.train import load_codec_config

        codec = load_codec_config(path).codec
        assert build_codec(codec.name, codec.params).sample_rate > 0
        return
    cfg = load_config(path)
    assert cfg.data.sample_rate == cfg.model.params.get("sample_rate", cfg.data.sample_rate)


def test_stage2_params_and_lr_are_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: ddtse}\nstage2: {params: {emulate_inferense: true}}\n")
    with pytest.raises(TsekitError, match=r"unknown key 'stage2.params.emulate_inferense'; valid parameters of "
                                          "model ddtse"):
        load_config(path)
    path.write_text("model: {name: ddtse}\nstage2: {lr: -1}\ntrain: {ema: 1.5}\n")
    with pytest.raises(TsekitError, match="stage2.lr: must be > 0 or null, got -1"):
        load_config(path)
    path.write_text("model: {name: ddtse}\ntrain: {ema: 1.5}\n")
    with pytest.raises(TsekitError, match=r"train.ema: must be in \[0, 1\)"):
        load_config(path)
    path.write_text("model: {name: ddtse}\nstage2: {params: {emulate_inference: yes please}}\n")
    with pytest.raises(TsekitError, match="stage2.params.emulate_inference: expected"):
        load_config(path)


def test_published_batches_are_the_global_batch_their_comments_name():
    """``data.batch_size`` is the batch of all processes together: a config whose comment says "batch B (b per GPU
    on G GPUs" must set B, and B = b x G."""
    named = 0
    for path in sorted(Path(__file__).resolve().parent.parent.glob("egs/*/conf/*.yaml")):
        found = re.search(r"batch (\d+) \((\d+) per GPU on (\d+) GPUs", path.read_text())
        if found:
            total, per_gpu, gpus = map(int, found.groups())
            assert total == per_gpu * gpus and load_config(path, []).data.batch_size == total, path
            named += 1
    assert named >= 3  # the DDTSE configs of libri2mix, wsj0_2mix and wham_noisy
