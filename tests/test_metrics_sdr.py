"""SI-SDR, SNR and BSS-Eval of tsekit.metrics.sdr against the reference implementations, on real speech.

Speech comes from the Debian TTS voices (two different speakers), mixed at
several SIRs with white noise; the "estimates" cover what a TSE system can
output: the mixture itself, the target plus noise, a partly cleaned mixture,
a filtered / scaled / delayed target, the interference and silence.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter, resample_poly

from tsekit.corpora.tts import BASE_VOICES, Speaker, missing_packages, synthesize
from tsekit.metrics import sdr as sdr_module
from tsekit.metrics.sdr import CLAMP_DB, bss_eval, si_sdr, snr

torch = pytest.importorskip("torch")
fast_bss_eval = pytest.importorskip("fast_bss_eval")
mir_separation = pytest.importorskip("mir_eval.separation")
torchmetrics_audio = pytest.importorskip("torchmetrics.functional.audio")

pytestmark = [
    pytest.mark.tts,
    pytest.mark.skipif(bool(missing_packages(BASE_VOICES[:3])), reason="TTS voices missing"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),  # mir_eval deprecates bss_eval_sources
]

RATE = 16000
SIRS_DB = (-5.0, 0.0, 5.0)


def _scaled(signal: np.ndarray, reference: np.ndarray, ratio_db: float) -> np.ndarray:
    """``signal`` scaled so that reference energy / its energy = ratio_db."""
    gain = np.sqrt(np.sum(reference**2) / np.sum(signal**2) / 10 ** (ratio_db / 10))
    return signal * gain


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, np.ndarray]:
    """Target (female flite voice) and other talker (Scottish male flite voice), float64.

    The shorter one is padded with zeros, so both end in silence (as the
    TTS output starts and ends with 0.1 s of it) and delaying the target
    loses no speech.
    """
    target = synthesize("The old farmer carried a basket of apples across the bridge to the market.",
                        Speaker("1", BASE_VOICES[2], 0, 1.0), RATE)  # fmt: skip
    other = synthesize("A curious sailor found a broken lamp in the drawer of the captain's table.",
                       Speaker("2", BASE_VOICES[0], 0, 1.0), RATE)  # fmt: skip
    length = max(target.size, other.size)
    target, other = (np.pad(x.astype(np.float64), (0, length - x.size)) for x in (target, other))
    return target, other


def _scene(speech: tuple[np.ndarray, np.ndarray], sir_db: float) -> dict:
    """A mixture at ``sir_db`` plus white noise at 20 dB SNR, and the estimates to score against it."""
    target, other = speech
    rng = np.random.default_rng(int(sir_db) + 100)
    noise = _scaled(rng.standard_normal(target.size), target, 20.0)
    interference = _scaled(other, target, sir_db) + noise
    mixture = target + interference
    white = rng.standard_normal(target.size)
    estimates = {
        "mixture": mixture,
        "target + noise at 20 dB": target + _scaled(white, target, 20.0),
        "target + noise at 5 dB": target + _scaled(white, target, 5.0),
        "partly cleaned": target + 0.2 * interference + _scaled(white, target, 30.0),
        "filtered target": lfilter([0.6, 0.3, -0.2, 0.1], [1.0], target),
        "scaled target": 2.0 * target,
        "target 100 samples late": np.concatenate([np.zeros(100), target[:-100]]),
        "target 2000 samples late": np.concatenate([np.zeros(2000), target[:-2000]]),
        "interference": interference,
        "all-zero": np.zeros(target.size),
    }
    return {"target": target, "interference": interference, "mixture": mixture, "estimates": estimates}


@pytest.fixture(scope="module")
def scenes(speech) -> dict[float, dict]:
    return {sir: _scene(speech, sir) for sir in SIRS_DB}


def _tensor(array: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))


def _direct_si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Textbook zero-mean SI-SDR without any epsilon (Le Roux et al. 2019, eq. 5)."""
    e = estimate - estimate.mean()
    r = reference - reference.mean()
    target_part = (e @ r) / (r @ r) * r
    return 10 * math.log10(np.sum(target_part**2) / np.sum((e - target_part) ** 2))


# estimates whose true SI-SDR / SDR is infinite or undefined: compared separately
PERFECT = {"scaled target"}
DEGENERATE = {"all-zero"}


def test_si_sdr_matches_direct_formula_and_torchmetrics(scenes):
    checked = 0
    for scene in scenes.values():
        target = scene["target"]
        for name, estimate in scene["estimates"].items():
            if name in PERFECT | DEGENERATE:
                continue
            ours = si_sdr(estimate, target)
            assert ours == pytest.approx(_direct_si_sdr(estimate, target), abs=1e-9), name
            reference = torchmetrics_audio.scale_invariant_signal_distortion_ratio(
                _tensor(estimate), _tensor(target), zero_mean=True
            )
            assert ours == pytest.approx(float(reference), abs=1e-4), name
            checked += 1
    assert checked == len(SIRS_DB) * 8


def test_si_sdr_is_scale_invariant_and_zero_mean(scenes):
    scene = scenes[0.0]
    target = scene["target"]
    for name in ("mixture", "target + noise at 5 dB", "partly cleaned", "interference"):
        estimate = scene["estimates"][name]
        value = si_sdr(estimate, target)
        assert si_sdr(2.0 * estimate, target) == pytest.approx(value, abs=1e-9), name
        assert si_sdr(0.1 * estimate, 3.0 * target) == pytest.approx(value, abs=1e-9), name
        # the mean is removed first: a DC offset on either signal changes nothing
        assert si_sdr(estimate + 0.05, target - 0.02) == pytest.approx(value, abs=1e-9), name
    # scaling the target itself is a perfect estimate: the clamp
    assert si_sdr(2.0 * target, target) == CLAMP_DB
    # ordering: cleaner estimates score higher
    estimates = scene["estimates"]
    order = ["target + noise at 20 dB", "partly cleaned", "target + noise at 5 dB", "mixture", "interference"]
    values = [si_sdr(estimates[name], target) for name in order]
    assert values == sorted(values, reverse=True)


def test_snr_matches_torchmetrics(scenes):
    for scene in scenes.values():
        target = scene["target"]
        for name, estimate in scene["estimates"].items():
            if name in PERFECT | DEGENERATE:
                continue
            reference = torchmetrics_audio.signal_noise_ratio(_tensor(estimate), _tensor(target))
            assert snr(estimate, target) == pytest.approx(float(reference), abs=1e-4), name
    target = scenes[0.0]["target"]
    # not scale invariant: twice the target has an error as large as the target
    assert snr(2.0 * target, target) == pytest.approx(0.0, abs=1e-6)
    noisy = scenes[0.0]["estimates"]["target + noise at 20 dB"]
    assert snr(noisy, target) == pytest.approx(20.0, abs=1e-6)


def _fast_reference(estimate: np.ndarray, scene: dict, clamp_db: float | None = CLAMP_DB, **options):
    """fast_bss_eval with references [target, interference] and estimates [estimate, mixture - estimate].

    The torch backend: fast_bss_eval 0.1.4's numpy backend breaks on numpy 2
    with compute_permutation=False (np.linalg.solve no longer broadcasts a
    stack of vectors). Source 0 depends only on the first estimate.
    """
    references = np.stack([scene["target"], scene["interference"]])
    estimates = np.stack([estimate, scene["mixture"] - estimate])
    return _reference_process().submit(_fast_bss_eval_source0, references, estimates, clamp_db, options).result()


def _fast_bss_eval_source0(references, estimates, clamp_db, options) -> tuple[float, ...]:
    values = fast_bss_eval.bss_eval_sources(
        _tensor(references), _tensor(estimates), compute_permutation=False, clamp_db=clamp_db, **options
    )
    return tuple(float(v[0]) for v in values)


_POOL = []


@pytest.fixture(scope="module", autouse=True)
def _stop_reference_process():
    yield
    while _POOL:
        _POOL.pop().shutdown()


def _reference_process():
    """A fresh interpreter for the fast_bss_eval reference: once any code in this process has called
    torch.set_num_threads (the scorer and inference do), torch's LU solves can fail or go wrong, and the
    reference must not depend on what other tests ran before."""
    if not _POOL:
        import concurrent.futures
        import multiprocessing

        _POOL.append(concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")))
    return _POOL[0]


def test_bss_eval_matches_fast_bss_eval(scenes):
    worst = 0.0
    for sir, scene in scenes.items():
        for name, estimate in scene["estimates"].items():
            ours = bss_eval(estimate, scene["target"], scene["interference"])
            reference = _fast_reference(estimate, scene)
            if name in DEGENERATE:  # fast_bss_eval: SIR 0/0 = NaN; ours: the floor on all three
                assert ours == (-CLAMP_DB, -CLAMP_DB, -CLAMP_DB)
                assert reference[0] == reference[2] == -CLAMP_DB
                continue
            assert all(math.isfinite(v) for v in ours), (sir, name)
            worst = max(worst, *(abs(a - b) for a, b in zip(ours, reference, strict=True)))
            assert ours == pytest.approx(reference, abs=0.05), (sir, name)
    # the two solve the same least-squares problems; measured differences are below 1e-6 dB
    assert worst < 1e-4


def test_bss_eval_matches_mir_eval_v3(scenes):
    """mir_eval (BSS-Eval v3 sources) solves the same projections densely.

    Its Gram matrix comes from circular correlations with a power-of-two FFT
    of at least n + 511 points, so lags wrap around when n + 1022 exceeds it;
    TTS speech starts and ends with 0.1 s of near-silence, so the wrapped
    terms are tiny. Measured: below 1e-9 dB on these signals; the tolerance,
    1e-3 dB, leaves room for other BLAS builds. mir_eval does not clamp, so
    values beyond +-CLAMP_DB (perfect fits) are compared as clamped.
    """
    scene = scenes[0.0]
    references = np.stack([scene["target"], scene["interference"]])
    for name, estimate in scene["estimates"].items():
        if name in DEGENERATE:  # mir_eval refuses silent estimates
            continue
        second = scene["mixture"] - estimate
        if not np.any(second):  # mir_eval also refuses a silent second estimate; it does not affect source 0
            second = scene["interference"]
        sdr, sir, sar, _ = mir_separation.bss_eval_sources(
            references, np.stack([estimate, second]), compute_permutation=False
        )
        expected = np.clip([sdr[0], sir[0], sar[0]], -CLAMP_DB, CLAMP_DB)
        ours = bss_eval(estimate, scene["target"], scene["interference"])
        assert ours == pytest.approx(tuple(expected), abs=1e-3), name


def test_bss_eval_sdr_only_matches_fast_bss_eval_sdr(scenes):
    for scene in scenes.values():
        target = scene["target"]
        for name, estimate in scene["estimates"].items():
            sdr, sir, sar = bss_eval(estimate, target)
            assert math.isnan(sir) and math.isnan(sar)
            expected = float(fast_bss_eval.sdr(target[None], estimate[None], clamp_db=CLAMP_DB)[0])
            assert sdr == pytest.approx(expected, abs=1e-4), name
            # the SDR does not depend on the interference
            assert sdr == pytest.approx(bss_eval(estimate, target, scene["interference"])[0], abs=1e-9), name
    # an all-zero interference is no interference
    scene = scenes[0.0]
    silent = np.zeros_like(scene["target"])
    sdr, sir, sar = bss_eval(scene["mixture"], scene["target"], silent)
    assert math.isnan(sir) and math.isnan(sar)
    assert sdr == pytest.approx(bss_eval(scene["mixture"], scene["target"])[0])


def test_bss_eval_allows_a_filter_of_filter_length_taps(scenes):
    scene = scenes[0.0]
    target, estimates = scene["target"], scene["estimates"]
    # a short filter or a delay within 512 taps is not a distortion; SI-SDR does penalise them
    assert bss_eval(estimates["filtered target"], target)[0] > 60.0
    assert bss_eval(estimates["target 100 samples late"], target)[0] > 60.0
    assert si_sdr(estimates["target 100 samples late"], target) < 5.0
    assert bss_eval(estimates["target 2000 samples late"], target)[0] < 0.0
    # with 64 taps a 100-sample delay is out of reach again, as in fast_bss_eval
    late = estimates["target 100 samples late"]
    ours = bss_eval(late, target, scene["interference"], filter_length=64)
    assert ours[0] < 10.0
    assert ours == pytest.approx(_fast_reference(late, scene, filter_length=64), abs=1e-4)
    # a filter length that is odd (no two-lag grouping) gives the same numbers as fast_bss_eval
    noisy = estimates["partly cleaned"]
    odd = bss_eval(noisy, target, scene["interference"], filter_length=255)
    assert odd == pytest.approx(_fast_reference(noisy, scene, filter_length=255), abs=1e-4)


def test_bss_eval_uses_the_fast_solver_on_speech(scenes, monkeypatch):
    """Real speech never needs the O(L^3) dense fallback (it is what makes bss_eval fast)."""
    dense_calls = []
    real_dense = sdr_module._dense_solve
    monkeypatch.setattr(sdr_module, "_dense_solve", lambda *a: dense_calls.append(1) or real_dense(*a))
    for scene in scenes.values():
        for estimate in scene["estimates"].values():
            bss_eval(estimate, scene["target"], scene["interference"])
    assert dense_calls == []


def test_bss_eval_on_band_limited_speech(monkeypatch):
    """8 kHz speech played at 16 kHz (upsampled, 16-bit): nothing above 4 kHz, an ill-conditioned Gram matrix.

    The recursion still matches fast_bss_eval's dense LU solve, including a
    high SIR (a small difference of two large projections), without the
    dense fallback. Grouping more lags per recursion step loses digits here.
    """
    dense_calls = []
    real_dense = sdr_module._dense_solve
    monkeypatch.setattr(sdr_module, "_dense_solve", lambda *a: dense_calls.append(1) or real_dense(*a))

    def telephone(text: str, voice: int) -> np.ndarray:
        speech8k = synthesize(text, Speaker(str(voice), BASE_VOICES[voice], 0, 1.0), 8000)
        return np.round(resample_poly(speech8k.astype(np.float64), 2, 1) * 32767) / 32767

    target = telephone("Thomas carried the heavy ladder past the old mill.", 2)
    other = telephone("The stranger gave a small gift to the cheerful teacher.", 0)
    length = max(target.size, other.size)
    target, other = (np.pad(x, (0, length - x.size)) for x in (target, other))
    scene = {"target": target, "interference": other, "mixture": target + other}
    noise = np.random.default_rng(8).standard_normal(length)
    sirs = []
    for estimate in (target + _scaled(noise, target, 25.0), target + 0.3 * other, target + other):
        ours = bss_eval(estimate, target, other)
        assert ours == pytest.approx(_fast_reference(estimate, scene), abs=1e-3)
        sirs.append(ours[1])
    assert sirs[0] > 35.0  # target + white noise: almost no interference, the delicate case
    assert dense_calls == []


def test_bss_eval_degenerate_interference_falls_back_to_dense_solve(scenes):
    """Interference that is a copy of the target makes the joint system singular."""
    scene = scenes[0.0]
    target, estimate = scene["target"], scene["estimates"]["target + noise at 5 dB"]
    sdr, sir, sar = bss_eval(estimate, target, 0.5 * target)
    # the joint span is the target's span: nothing is interference, artifacts = distortion
    assert sir == CLAMP_DB
    assert sar == pytest.approx(sdr, abs=1e-6)
    assert sdr == pytest.approx(bss_eval(estimate, target)[0], abs=1e-9)


def test_silence_gives_finite_values(scenes):
    scene = scenes[0.0]
    target, interference = scene["target"], scene["interference"]
    silent = np.zeros_like(target)
    # all-zero estimate: the floor for SI-SDR and BSS-Eval; SNR 0 dB (the error is the whole target)
    assert si_sdr(silent, target) == -CLAMP_DB
    assert snr(silent, target) == 0.0
    assert bss_eval(silent, target, interference) == (-CLAMP_DB, -CLAMP_DB, -CLAMP_DB)
    assert bss_eval(silent, target)[0] == -CLAMP_DB
    # all-zero reference, and both silent
    for estimate in (scene["mixture"], silent):
        assert math.isfinite(si_sdr(estimate, silent))
        assert math.isfinite(snr(estimate, silent))
        values = bss_eval(estimate, silent, interference)
        assert all(math.isfinite(v) for v in values)
    assert si_sdr(scene["mixture"], silent) == -CLAMP_DB
    assert snr(scene["mixture"], silent) == -CLAMP_DB
    assert bss_eval(scene["mixture"], silent)[0] == -CLAMP_DB
    # a constant (DC) estimate is silence once the mean is removed
    assert si_sdr(np.full_like(target, 0.3), target) == -CLAMP_DB


def test_unequal_lengths_and_bad_input_raise_value_error(scenes):
    target = scenes[0.0]["target"]
    short = target[:-1]
    for metric in (si_sdr, snr, bss_eval):
        with pytest.raises(ValueError, match="samples"):
            metric(short, target)
    with pytest.raises(ValueError, match="interference"):
        bss_eval(target, target, target[:-5])
    with pytest.raises(ValueError, match="1-D"):
        si_sdr(np.stack([target, target]), np.stack([target, target]))
    with pytest.raises(ValueError, match="NaN"):
        snr(np.full(target.shape, np.nan), target)
    with pytest.raises(ValueError, match="filter_length"):
        bss_eval(target, target, filter_length=0)


def test_float32_input_gives_float64_precision(scenes):
    scene = scenes[5.0]
    target32 = scene["target"].astype(np.float32)
    estimate32 = scene["estimates"]["partly cleaned"].astype(np.float32)
    as64 = target32.astype(np.float64), estimate32.astype(np.float64)
    assert si_sdr(estimate32, target32) == si_sdr(as64[1], as64[0])
    assert bss_eval(estimate32, target32) == bss_eval(as64[1], as64[0])
