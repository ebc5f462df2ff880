"""Energy-ratio metrics of one estimate against its reference: SI-SDR, SNR and BSS-Eval SDR/SIR/SAR.

All functions take 1-D arrays of the same length (the scorer trims first),
compute in float64 and return finite dB values clamped to +-CLAMP_DB, also
for an all-zero estimate or reference, so a score table never holds inf.

``bss_eval`` follows BSS-Eval v4 as ``fast_bss_eval`` computes it by default
(and ESPnet/WeSep scoring use): one time-invariant distortion filter of
``filter_length`` taps over the whole signal, no mean removal. The
projections are solved here with FFT correlations and a Levinson-type
recursion on the Toeplitz structure, O(filter_length^2) instead of a dense
O(filter_length^3) solve; see ``_Projector``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable

import numpy as np

# Every value is clamped to +-CLAMP_DB (fast_bss_eval's ``clamp_db``). Beyond it
# float64 cannot resolve the ratio and the number only means "perfect" (+) or
# "nothing of the target" (-): silence scores -CLAMP_DB, so outputting silence
# never earns a positive improvement over the mixture.
CLAMP_DB = 100.0
# bss_eval: largest correlation between the residual of a fit and a delayed source
# (unit-norm signals) that still counts as a projection; see _solves
ORTHOGONALITY_TOLERANCE = 1e-8


def _as_pair(
    estimate: np.ndarray, reference: np.ndarray, name: str = "estimate"
) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as finite float64 1-D arrays of one length, else ValueError."""
    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if est.ndim != 1 or ref.ndim != 1:
        raise ValueError(f"expected 1-D signals, got shapes {est.shape} and {ref.shape}")
    if est.shape != ref.shape:
        raise ValueError(f"{name} has {est.size} samples but reference has {ref.size}")
    if est.size == 0:
        raise ValueError("empty signals")
    if not (np.isfinite(est).all() and np.isfinite(ref).all()):
        raise ValueError("signal contains NaN or inf")
    return est, ref


def ratio_db(signal: float, distortion: float) -> float:
    """10 log10(signal / distortion) clamped to +-CLAMP_DB; no signal energy is the floor."""
    if signal <= 0:
        return -CLAMP_DB
    if distortion <= 0:
        return CLAMP_DB
    return float(min(max(10.0 * math.log10(signal / distortion), -CLAMP_DB), CLAMP_DB))


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant SDR in dB, zero-mean version (Le Roux et al. 2019).

    Both signals have their mean removed first, as ESPnet, asteroid, SpEx+
    and WeSep do (torchmetrics ``zero_mean=True``). The reference is scaled to
    best fit the estimate, ``projection = <e, r> / |r|^2 * r``, and

        si_sdr = 10 log10(|projection|^2 / |e - projection|^2)

    clamped to +-CLAMP_DB (100 dB). Instead of an epsilon added to the
    energies (which shifts low values and breaks scale invariance for quiet
    signals) the undefined cases are set explicitly: an all-zero (or
    constant) estimate or reference gives -100 dB, the worst score, and a
    perfect estimate +100 dB. Exactly scale invariant otherwise.
    """
    est, ref = _as_pair(estimate, reference)
    est = est - est.mean()
    ref = ref - ref.mean()
    ref_energy = float(np.dot(ref, ref))
    if ref_energy == 0:
        return -CLAMP_DB
    projection = (np.dot(est, ref) / ref_energy) * ref
    noise = est - projection
    return ratio_db(float(np.dot(projection, projection)), float(np.dot(noise, noise)))


def snr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Plain SNR in dB, 10 log10(|r|^2 / |r - e|^2): not scale invariant, no mean removal.

    Clamped to +-CLAMP_DB: an all-zero estimate gives 0 dB (the error is the
    whole reference), an all-zero reference -100 dB, a perfect estimate +100 dB.
    """
    est, ref = _as_pair(estimate, reference)
    error = ref - est
    return ratio_db(float(np.dot(ref, ref)), float(np.dot(error, error)))


def bss_eval(
    estimate: np.ndarray,
    reference: np.ndarray,
    interference: np.ndarray | None = None,
    filter_length: int = 512,
) -> tuple[float, float, float]:
    """BSS-Eval v4 SDR, SIR, SAR (dB) of one estimate of ``reference``.

    ``interference`` is everything in the mixture that is not the target
    (other talkers plus noise; the scorer passes ``mixture - target``). The
    estimate e is projected onto the span of the target delayed by
    0..filter_length-1 samples (the distortion filter it is allowed), P_t e,
    and onto the span of delayed target and interference together, P_all e:

        SDR = |P_t e|^2 / |e - P_t e|^2
        SIR = |P_t e|^2 / |P_all e - P_t e|^2
        SAR = |P_all e|^2 / |e - P_all e|^2

    This is ``fast_bss_eval.bss_eval_sources`` with references
    ``[target, interference]``, ``compute_permutation=False`` (no mean
    removal, its default), and mir_eval's ``bss_eval_sources`` up to that
    one's circular-correlation shortcut. Without interference (``None`` or
    all zero) only SDR is defined and SIR, SAR are NaN. Values are clamped to
    +-100 dB; an all-zero estimate scores -100 dB on all three.
    """
    est, ref = _as_pair(estimate, reference)
    if filter_length < 1:
        raise ValueError(f"filter_length must be positive, got {filter_length}")
    sources = [ref]
    if interference is not None:
        interf, _ = _as_pair(interference, ref, "interference")
        if np.any(interf):
            sources.append(interf)
    # unit norms keep the systems well scaled; the ratios do not depend on them
    sources = [x / norm if (norm := np.linalg.norm(x)) > 0 else x for x in sources]
    est_energy = float(np.dot(est, est))
    if est_energy > 0:
        est = est / math.sqrt(est_energy)
        est_energy = 1.0
    fit = _Projector(np.stack(sources), est, filter_length)

    target_part = fit.project(1)
    target_residual = fit.energy(fit.estimate - target_part)
    target_explained = est_energy - target_residual  # = |P_t e|^2, robust to a slightly inexact filter
    sdr = ratio_db(target_explained, target_residual)
    if len(sources) == 1:
        return sdr, math.nan, math.nan
    all_part = fit.project(2)
    all_residual = fit.energy(fit.estimate - all_part)
    sir = ratio_db(target_explained, fit.energy(all_part - target_part))
    sar = ratio_db(est_energy - all_residual, all_residual)
    return sdr, sir, sar


class _Projector:
    """Least-squares fits of the estimate by the first d sources, each through an FIR filter.

    The filters h_a (``length`` taps each) minimise |e - sum_a h_a * s_a|^2.
    Their normal equations use the correlations, computed once by FFT with
    zero padding (linear, not circular, correlation): the inner product of
    s_a delayed by k and s_b delayed by l is gamma[k - l, a, b] with
    gamma[t, a, b] = sum_m s_a[m] s_b[m + t] and gamma[-t] = gamma[t].T, so
    the Gram matrix is (block) Toeplitz and a Levinson recursion solves it in
    O(length^2). The fit is accepted only if the residual is orthogonal to
    every delayed source (the defining property of a projection, see
    ``_solves``); otherwise (near-singular systems) a dense solve replaces it.
    """

    def __init__(self, sources: np.ndarray, estimate: np.ndarray, length: int) -> None:
        from scipy import fft

        self.length = length
        n_sources, n = sources.shape
        self.n_fft = fft.next_fast_len(n + length - 1, real=True)
        self.spectra = fft.rfft(sources, self.n_fft)
        self.estimate = fft.rfft(estimate, self.n_fft)  # spectra only: energies come from Parseval
        # Parseval weights of a one-sided spectrum: bins 1..N/2-1 stand for two bins each
        self.weights = np.full(self.estimate.size, 2.0 / self.n_fft)
        self.weights[0] = 1.0 / self.n_fft
        if self.n_fft % 2 == 0:
            self.weights[-1] = 1.0 / self.n_fft
        conj = self.spectra.conj()
        pairs = [(a, b) for a in range(n_sources) for b in range(a, n_sources)]
        products = np.empty((len(pairs) + n_sources, self.estimate.size), dtype=complex)
        for k, (a, b) in enumerate(pairs):
            np.multiply(conj[a], self.spectra[b], out=products[k])
        np.multiply(conj, self.estimate, out=products[len(pairs) :])
        lags = fft.irfft(products, self.n_fft)
        self.gamma = np.empty((length, n_sources, n_sources))
        for (a, b), corr in zip(pairs, lags, strict=False):
            self.gamma[:, a, b] = corr[:length]
            if a != b:  # r_ba(t) = r_ab(-t), at circular index n_fft - t
                self.gamma[:, b, a] = np.concatenate([corr[:1], corr[: self.n_fft - length : -1]])
        self.rhs = lags[len(pairs) :, :length].T.copy()  # rhs[t, a] = sum_m s_a[m] e[m + t]

    def energy(self, spectrum: np.ndarray) -> float:
        """Energy of the signal whose one-sided spectrum this is."""
        return float(np.dot(self.weights, spectrum.real**2 + spectrum.imag**2))

    def project(self, n_sources: int) -> np.ndarray:
        """Spectrum of the best fit of the estimate by the first ``n_sources`` sources."""
        gamma, rhs = self.gamma[:, :n_sources, :n_sources], self.rhs[:, :n_sources]
        if not np.any(rhs):  # estimate orthogonal to every delayed source, or silent
            return np.zeros_like(self.estimate)
        return self._filter(_solve_filters(gamma, rhs), n_sources)

    def _filter(self, filters: np.ndarray, n_sources: int) -> np.ndarray:
        from scipy import fft

        return np.sum(self.spectra[:n_sources] * fft.rfft(filters.T, self.n_fft), axis=0)


def _solve_filters(gamma: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Filters (length, d) of the normal equations: the Levinson recursion, or a dense solve where it fails."""
    filters = _levinson_solve(gamma, rhs)
    return filters if _solves(gamma, filters, rhs) else _dense_solve(gamma, rhs)


Blocks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def _tail(signal: np.ndarray, length: int) -> np.ndarray:
    """The last ``length`` samples (all of a shorter signal; none for length 0)."""
    return signal[max(0, len(signal) - length) :]


def sdr_of_blocks(blocks: Blocks, filter_length: int = 512) -> float:
    """``bss_eval``'s SDR (no interference) of one long (estimate, reference) pair handed out in consecutive
    blocks, in memory of one block: the same value as ``bss_eval`` on the whole signals, up to float64 rounding.

    ``blocks()`` must give the same blocks (float64 estimate and reference pieces of one length each) every time
    it is called; it is called twice. What bss_eval needs of the whole signals is small: the reference's
    autocorrelation and its cross-correlation with the estimate at lags 0..filter_length-1, and the energies.
    The first pass sums them block by block, each block carrying the last filter_length-1 reference samples
    before it so that every pair of samples (m, m + t) is counted once, by the block holding m + t. The
    distortion filter is then solved once, as ``bss_eval`` solves it, and the second pass filters the reference
    block by block (with the same carried samples) and sums the residual's energy, including the filter's
    ringing past the last sample, which ``bss_eval``'s zero-padded spectra hold too.
    """
    from scipy import fft

    length = filter_length
    gamma, rhs = np.zeros(length), np.zeros(length)
    est_energy = ref_energy = 0.0
    carried = np.zeros(0)
    for est, ref in blocks():
        joined = np.concatenate([carried, ref])
        n_fft = fft.next_fast_len(len(joined) + length, real=True)
        own = np.zeros(len(joined))
        ref_spectrum = fft.rfft(joined, n_fft).conj()
        own[len(carried) :] = ref
        lags = fft.irfft(ref_spectrum * fft.rfft(own, n_fft), n_fft)[:length]
        own[len(carried) :] = est
        gamma += lags
        rhs += fft.irfft(ref_spectrum * fft.rfft(own, n_fft), n_fft)[:length]
        est_energy += float(np.dot(est, est))
        ref_energy += float(np.dot(ref, ref))
        carried = _tail(joined, length - 1)
    if est_energy == 0 or ref_energy == 0 or not np.any(rhs):
        return -CLAMP_DB  # as bss_eval: nothing of the reference in the estimate (or nothing to find)
    # unit-norm signals, as bss_eval solves them (its orthogonality check is scaled for them)
    filters = _solve_filters((gamma / ref_energy)[:, None, None], (rhs / math.sqrt(ref_energy * est_energy))[:, None])
    taps = filters[:, 0] / math.sqrt(ref_energy)  # applied to the raw reference, in units of the unit-norm estimate
    residual = 0.0
    carried = np.zeros(0)
    for est, ref in blocks():
        joined = np.concatenate([carried, ref])
        n_fft = fft.next_fast_len(len(joined) + length - 1, real=True)
        fitted = fft.irfft(fft.rfft(joined, n_fft) * fft.rfft(taps, n_fft), n_fft)[len(carried) : len(joined)]
        error = est / math.sqrt(est_energy) - fitted
        residual += float(np.dot(error, error))
        carried = _tail(joined, length - 1)
    ringing = np.convolve(carried, taps)[len(carried) :]  # the fit past the end, where the estimate is zero
    residual += float(np.dot(ringing, ringing))
    return ratio_db(1.0 - residual, residual)


def si_sdr_of_blocks(blocks: Blocks) -> float:
    """``si_sdr`` of one long (estimate, reference) pair handed out in consecutive blocks (``sdr_of_blocks``
    says how), in memory of one block: the means first, then the centred signals' energies and inner product,
    from which the projection's and the residual's energies follow (|e|^2 - <e, r>^2 / |r|^2: the difference
    loses digits only past si_sdr's 100 dB clamp)."""
    count, est_sum, ref_sum = 0, 0.0, 0.0
    for est, ref in blocks():
        count += len(est)
        est_sum += float(est.sum())
        ref_sum += float(ref.sum())
    if count == 0:
        raise ValueError("empty signals")
    est_mean, ref_mean = est_sum / count, ref_sum / count
    inner = est_energy = ref_energy = 0.0
    for est, ref in blocks():
        est, ref = est - est_mean, ref - ref_mean
        inner += float(np.dot(est, ref))
        est_energy += float(np.dot(est, est))
        ref_energy += float(np.dot(ref, ref))
    if ref_energy == 0:
        return -CLAMP_DB
    projection = inner * inner / ref_energy
    return ratio_db(projection, max(est_energy - projection, 0.0))


def _solves(gamma: np.ndarray, filters: np.ndarray, rhs: np.ndarray) -> bool:
    """Do the filters satisfy the normal equations T h = rhs (T[k, l] = gamma[k - l])?

    rhs - T h is the correlation of the fit's residual with each delayed
    source, which is zero for a projection. With unit-norm signals an exact
    solve leaves ~1e-13 of round-off, a broken recursion far more. T h is a
    convolution of the lags with the filters: a short FFT.
    """
    from scipy import fft

    if not np.all(np.isfinite(filters)):
        return False
    length = gamma.shape[0]
    both = _all_lags(gamma)
    n_fft = fft.next_fast_len(3 * length - 2, real=True)
    spectrum = np.einsum("fab,fb->fa", fft.rfft(both, n_fft, axis=0), fft.rfft(filters, n_fft, axis=0))
    product = fft.irfft(spectrum, n_fft, axis=0)[length - 1 : 2 * length - 1]
    return bool(np.max(np.abs(rhs - product)) < ORTHOGONALITY_TOLERANCE)



def _levinson_solve(gamma: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Filters (length, d) solving the block-Toeplitz normal equations; NaN if the recursion fails."""
    from scipy.linalg import LinAlgError, solve_toeplitz

    length, d, _ = gamma.shape
    try:
        if d == 1:
            return solve_toeplitz(gamma[:, 0, 0], rhs[:, 0], check_finite=False)[:, None]
        # group two lags per block when possible: half the steps, same accuracy (four or more lags
        # per block invert ill-conditioned blocks explicitly and lose digits on band-limited speech)
        group = 2 if length % 2 == 0 else 1
        blocks = _group_lags(gamma, group)
        return _block_levinson(blocks, rhs.reshape(length // group, group * d)).reshape(length, d)
    except (LinAlgError, ValueError):
        return np.full((length, d), np.nan)


def _all_lags(gamma: np.ndarray) -> np.ndarray:
    """gamma at lags -(L-1)..L-1 (index L-1+t holds gamma(t)), from gamma(-t) = gamma(t).T."""
    return np.concatenate([gamma[:0:-1].transpose(0, 2, 1), gamma])


def _group_lags(gamma: np.ndarray, m: int) -> np.ndarray:
    """Blocks of m lags: out[t][(p, a), (q, b)] = gamma(t*m + p - q)[a, b], shape (L/m, m*d, m*d)."""
    length, d, _ = gamma.shape
    both = _all_lags(gamma)
    tau = np.arange(0, length, m)[:, None, None] + np.arange(m)[:, None] - np.arange(m)  # in -(m-1)..L-1
    blocks = both[length - 1 + tau]  # (L/m, m, m, d, d)
    return blocks.transpose(0, 1, 3, 2, 4).reshape(length // m, m * d, m * d)


def _block_levinson(blocks: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Solve T x = y for the block-Toeplitz T[k, l] = G(k - l), G(-t) = G(t)^T (Whittle/Levinson).

    Keeps, for the leading n x n block system T_n, the forward solution
    f (T_n f = [I, 0, ..., 0]^T), the backward solution b (T_n b = [0, ..., 0, I]^T)
    and x (T_n x = y[:n]). Growing n by one block:

        eps_f = sum_j G(n - j) f_j      eps_b = sum_j G(-(j + 1)) b_j      eps_x = sum_j G(n - j) x_j
        f <- [f; 0] A + [0; b] (-eps_f A)      A = (I - eps_b eps_f)^{-1}
        b <- [f; 0] (-eps_b D) + [0; b] D      D = (I - eps_f eps_b)^{-1}
        x <- [x; 0] + b (y_n - eps_x)

    Returns x flattened block by block.
    """
    from scipy.linalg import LinAlgError
    from scipy.linalg.lapack import dgesv  # 4x faster than np.linalg.inv on tiny blocks

    steps, size, _ = blocks.shape
    eye = np.eye(size)

    def inverse(matrix: np.ndarray) -> np.ndarray:
        *_, result, info = dgesv(matrix, eye)
        if info != 0:
            raise LinAlgError("singular pivot block")
        return result

    # block rows G(steps-1) ... G(1), G(0) and G(-1) ... G(-(steps-1)), flattened for one matmul each
    rising = np.ascontiguousarray(blocks[::-1].transpose(1, 0, 2).reshape(size, steps * size))
    falling = np.ascontiguousarray(blocks[1:].transpose(2, 0, 1).reshape(size, (steps - 1) * size))
    # columns: forward f | backward b | solution x; one block row per step
    work = np.zeros((steps * size, 2 * size + 1))
    fwd, bwd, sol = slice(0, size), slice(size, 2 * size), 2 * size
    first = inverse(blocks[0])
    work[:size, fwd] = first
    work[:size, bwd] = first
    work[:size, sol] = first @ y[0]
    update = np.empty((2 * size, 2 * size))
    for n in range(1, steps):
        rows = n * size
        head = work[:rows]
        eps = rising[:, (steps - 1 - n) * size : (steps - 1) * size] @ head
        eps_f, eps_x = eps[:, fwd], eps[:, sol]
        eps_b = falling[:, :rows] @ head[:, bwd]
        d = inverse(eye - eps_f @ eps_b)
        b_d = eps_b @ d
        a = eye + b_d @ eps_f  # = (I - eps_b eps_f)^{-1}, by the push-through identity
        update[:size, fwd], update[:size, bwd] = a, -b_d
        update[size:, fwd], update[size:, bwd] = -eps_f @ a, d
        shifted = head[:, bwd] @ update[size:]  # the [0; b] part, taken before f and b are overwritten
        work[:rows, : 2 * size] = head[:, fwd] @ update[:size]
        work[rows : rows + size, : 2 * size] = 0.0
        work[size : rows + size, : 2 * size] += shifted
        work[: rows + size, sol] += work[: rows + size, bwd] @ (y[n] - eps_x)
    return work[:, sol]


def _dense_solve(gamma: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Filters (length, d) from the full Gram matrix: LU like fast_bss_eval, least squares if singular.

    O(length^3); used only when the fast recursion does not give a projection.
    """
    from scipy.linalg import LinAlgError, LinAlgWarning, lstsq, solve

    length, d, _ = gamma.shape
    lag = np.arange(length)[:, None] - np.arange(length)  # k - l
    both = _all_lags(gamma)
    gram = both[length - 1 + lag].transpose(2, 0, 3, 1).reshape(d * length, d * length)  # source-major
    y = rhs.T.reshape(-1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", LinAlgWarning)  # ill-conditioned: take least squares
            solution = solve(gram, y, assume_a="sym", check_finite=False)
    except (LinAlgError, LinAlgWarning):
        solution = lstsq(gram, y, check_finite=False)[0]
    return solution.reshape(d, length).T
