"""TSEDataset over a real Libri2Mix-layout data dir: chunks, padding, enrollments, dynamic mixing, seeds.

The data dir comes from the real producers (a fake Libri2Mix tree, ``prepare_libri2mix``
with ``mix_both`` so noise1.scp exists, and ``enroll_data_dir``). Expected values are read
from the audio files with soundfile, not through the dataset's own reader.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).parent))
from corpus_trees import make_libri2mix_tree  # noqa: E402

from tsekit import TsekitError  # noqa: E402
from tsekit.corpora.librimix import prepare_libri2mix  # noqa: E402
from tsekit.data.dataset import UNKNOWN_SPEAKER, TSEDataset, collate, make_loader  # noqa: E402
from tsekit.data.enroll import enroll_data_dir  # noqa: E402
from tsekit.data.table import read_list_table, read_table, write_table  # noqa: E402

RATE = 8000
ALL = frozenset({"target", "enroll", "speaker"})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    make_libri2mix_tree(root / "Libri2Mix", rates=(RATE,), splits=("dev",), per_split=16)
    prepare_libri2mix(root / "Libri2Mix", root / "data", sample_rate=RATE, mixture="mix_both", splits=("dev",))
    enroll_data_dir(root / "data" / "dev")
    return root / "data" / "dev"


def table(data: Path, name: str) -> dict[str, str]:
    return read_table(data / name)


def audio(entry: str) -> np.ndarray:
    samples, rate = sf.read(entry, dtype="float32")
    assert rate == RATE
    return samples


def energy(x: np.ndarray) -> float:
    return float(np.sum(np.asarray(x, dtype=np.float64) ** 2))


def copy_without(data: Path, tmp_path: Path, *names: str) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(data, out)
    for name in names:
        (out / name).unlink()
    return out


def test_training_chunks_are_the_same_span_of_mixture_and_target(data):
    wav, spk1 = table(data, "wav.scp"), table(data, "spk1.scp")
    dataset = TSEDataset(data, ALL, RATE, train=True, chunk_seconds=0.25)
    chunk = int(0.25 * RATE)
    starts = set()
    for index in range(len(dataset)):
        item = dataset[index]
        utt = item["utt"]
        assert item["mixture"].shape == (chunk,) and item["target"].shape == (chunk,)
        assert item["mixture"].dtype == torch.float32 and item["length"] == chunk
        mixture, target = audio(wav[utt]), audio(spk1[utt])
        # locate the chunk in the mixture file by search, independent of the dataset's bookkeeping
        windows = np.lib.stride_tricks.sliding_window_view(mixture, chunk)
        found = np.flatnonzero((windows == item["mixture"].numpy()).all(axis=1))
        assert len(found) >= 1
        start = int(found[0])
        np.testing.assert_array_equal(item["target"].numpy(), target[start : start + chunk])
        assert dataset.example(index).start == start
        starts.add(start)
    assert len(starts) > len(dataset) // 2  # random offsets, not always the beginning


def test_short_rows_are_zero_padded_and_lengths_count_the_valid_samples(data):
    wav, spk1 = table(data, "wav.scp"), table(data, "spk1.scp")
    dataset = TSEDataset(data, frozenset({"target"}), RATE, train=True, chunk_seconds=1.0)  # rows are < 0.6 s
    items = [dataset[i] for i in range(4)]
    for item in items:
        mixture, target = audio(wav[item["utt"]]), audio(spk1[item["utt"]])
        assert item["mixture"].shape == (RATE,) and item["length"] == len(mixture) < RATE
        np.testing.assert_array_equal(item["mixture"][: len(mixture)].numpy(), mixture)
        np.testing.assert_array_equal(item["target"][: len(target)].numpy(), target)
        assert not item["mixture"][len(mixture) :].any() and not item["target"][len(target) :].any()
    batch = collate(items)
    assert batch["mixture"].shape == (4, RATE)
    assert batch["lengths"].dtype == torch.int64
    assert batch["lengths"].tolist() == [len(audio(wav[item["utt"]])) for item in items]


def test_validation_gives_whole_rows_and_collate_pads_them(data):
    wav, spk1, enroll = table(data, "wav.scp"), table(data, "spk1.scp"), table(data, "enroll.scp")
    # chunking, enrollment crops and dynamic mixing are training-only: asked for here, they are ignored
    dataset = TSEDataset(data, ALL, RATE, train=False, chunk_seconds=0.1, enroll_seconds=0.1, dynamic_mixing=True)
    items = [dataset[i] for i in range(6)]
    for item in items:
        utt = item["utt"]
        np.testing.assert_array_equal(item["mixture"].numpy(), audio(wav[utt]))
        np.testing.assert_array_equal(item["target"].numpy(), audio(spk1[utt]))
        np.testing.assert_array_equal(item["enroll"].numpy(), audio(enroll[utt]))
    batch = collate(items)
    longest = max(len(item["mixture"]) for item in items)
    longest_enroll = max(len(item["enroll"]) for item in items)
    assert len({len(item["mixture"]) for item in items}) > 1  # the batch really needs padding
    assert batch["mixture"].shape == batch["target"].shape == (6, longest)
    assert batch["enroll"].shape == (6, longest_enroll)
    assert batch["lengths"].tolist() == [len(item["mixture"]) for item in items]
    assert batch["enroll_lengths"].dtype == torch.int64
    assert batch["enroll_lengths"].tolist() == [len(item["enroll"]) for item in items]
    assert batch["speaker"].dtype == torch.int64 and batch["speaker"].shape == (6,)
    assert batch["utts"] == [item["utt"] for item in items]
    for row, item in enumerate(items):
        n = len(item["mixture"])
        assert torch.equal(batch["target"][row, :n], item["target"]) and not batch["target"][row, n:].any()


def test_sampled_enrollment_is_another_utterance_of_the_speaker_outside_the_mixture(data):
    wav, spk1 = table(data, "wav.scp"), table(data, "spk1.scp")
    utt2spk, utt2uniq = table(data, "utt2spk"), table(data, "utt2uniq")
    pool = read_list_table(data / "spk2enroll")
    dataset = TSEDataset(data, ALL, RATE, train=True, chunk_seconds=0.25, enroll="sampled", enroll_seconds=0.2)
    crop = int(0.2 * RATE)
    chosen: dict[str, set[str]] = {}
    for epoch in range(4):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item, example = dataset[index], dataset.example(index)
            utt, row = item["utt"], example.enroll_row
            assert row in pool[utt2spk[utt]] and utt2spk[row] == utt2spk[utt]
            assert utt2uniq[row] != utt2uniq[utt], "enrolled with the target utterance itself"
            assert wav[row] != wav[utt], "enrolled from the target's own mixture"
            source = audio(spk1[row])
            assert len(item["enroll"]) == min(crop, len(source))
            start = example.enroll_start
            np.testing.assert_array_equal(item["enroll"].numpy(), source[start : start + len(item["enroll"])])
            chosen.setdefault(utt, set()).add(row)
    assert max(len(rows) for rows in chosen.values()) > 1  # a fresh draw per epoch


def test_fixed_enrollment_is_enroll_scp_cropped_for_training(data):
    enroll = table(data, "enroll.scp")
    dataset = TSEDataset(data, frozenset({"enroll"}), RATE, train=True, chunk_seconds=0.25, enroll_seconds=0.2)
    for index in range(5):
        item, example = dataset[index], dataset.example(index)
        whole = audio(enroll[item["utt"]])
        assert example.enroll_row == "" and len(item["enroll"]) == int(0.2 * RATE)
        start = example.enroll_start
        np.testing.assert_array_equal(item["enroll"].numpy(), whole[start : start + int(0.2 * RATE)])


def batches(dataset: TSEDataset, workers: int, shuffle: bool = True, seed: int = 3) -> list[dict]:
    return list(make_loader(dataset, batch_size=3, shuffle=shuffle, num_workers=workers, seed=seed))


def same_batches(a: list[dict], b: list[dict]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x.keys() != y.keys() or x["utts"] != y["utts"]:
            return False
        if any(not torch.equal(x[k], y[k]) for k in x if k != "utts"):
            return False
    return True


def test_items_depend_on_seed_and_epoch_only_not_on_workers(data):
    options = dict(train=True, chunk_seconds=0.25, enroll="sampled", enroll_seconds=0.2, dynamic_mixing=True,
                   dm_noise=True, seed=11)
    first = TSEDataset(data, ALL, RATE, **options)
    serial = batches(first, workers=0)
    assert same_batches(serial, batches(TSEDataset(data, ALL, RATE, **options), workers=2))
    # asked in another order, item 5 is still item 5
    assert torch.equal(first[5]["mixture"], TSEDataset(data, ALL, RATE, **options)[5]["mixture"])
    first.set_epoch(1)
    later = batches(first, workers=0)
    assert not same_batches(serial, later)
    assert [u for b in serial for u in b["utts"]] != [u for b in later for u in b["utts"]]  # reshuffled
    fresh = TSEDataset(data, ALL, RATE, **options)
    fresh.set_epoch(1)  # epoch 1's order and items do not depend on having run epoch 0
    assert same_batches(later, batches(fresh, workers=2))
    other_seed = TSEDataset(data, ALL, RATE, **{**options, "seed": 12})
    assert not same_batches(serial, batches(other_seed, workers=0))
    in_order = [u for b in batches(first, workers=0, shuffle=False) for u in b["utts"]]
    assert in_order == sorted(table(data, "wav.scp"))


@pytest.mark.parametrize("chunk_seconds", [0.25, None])
def test_dynamic_mixing_adds_another_speaker_at_the_drawn_sir(data, chunk_seconds):
    spk1, utt2spk, wav = table(data, "spk1.scp"), table(data, "utt2spk"), table(data, "wav.scp")
    dataset = TSEDataset(data, ALL, RATE, train=True, chunk_seconds=chunk_seconds, dynamic_mixing=True,
                         dm_sir_range=(-5, 5), seed=4)
    sirs, offsets = [], []
    for index in range(len(dataset)):
        item, example = dataset[index], dataset.example(index)
        utt, n = item["utt"], item["length"]
        assert utt2spk[example.interferer] != utt2spk[utt]
        start = example.start
        target = audio(spk1[utt])[start : start + n]
        np.testing.assert_array_equal(item["target"][:n].numpy(), target)
        interferer = np.zeros(n, np.float32)
        source = audio(spk1[example.interferer])[example.interferer_start : example.interferer_start + n]
        interferer[example.interferer_offset : example.interferer_offset + len(source)] = source
        gain = np.sqrt(energy(target) / (energy(interferer) * 10 ** (example.sir_db / 10)))
        mixture = item["mixture"][:n].numpy()
        np.testing.assert_allclose(mixture, target + gain * interferer, atol=1e-6)
        measured = 10 * np.log10(energy(target) / energy(mixture - target))
        assert measured == pytest.approx(example.sir_db, abs=0.01) and -5 <= example.sir_db <= 5
        assert not np.array_equal(mixture, audio(wav[utt])[start : start + n])
        sirs.append(example.sir_db)
        offsets.append(example.interferer_offset)
    assert np.std(sirs) > 1.0
    if chunk_seconds is None:  # whole targets: shorter interferers land at random places inside
        assert any(offset > 0 for offset in offsets)


def test_dynamic_mixing_adds_noise_at_the_drawn_snr(data):
    spk1, noise1 = table(data, "spk1.scp"), table(data, "noise1.scp")
    dataset = TSEDataset(data, frozenset({"target"}), RATE, train=True, chunk_seconds=0.25, dynamic_mixing=True,
                         dm_noise=True, dm_snr_range=(0, 20), seed=5)
    for index in range(8):
        item, example = dataset[index], dataset.example(index)
        n = item["length"]
        target = audio(spk1[item["utt"]])[example.start : example.start + n]
        source = audio(spk1[example.interferer])[example.interferer_start : example.interferer_start + n]
        interferer = np.zeros(n, np.float32)
        interferer[example.interferer_offset : example.interferer_offset + len(source)] = source
        speech = target + np.sqrt(energy(target) / (energy(interferer) * 10 ** (example.sir_db / 10))) * interferer
        noise = np.resize(audio(noise1[example.noise_row])[example.noise_start :], n)
        rest = item["mixture"].numpy() - speech
        assert 10 * np.log10(energy(speech) / energy(rest)) == pytest.approx(example.snr_db, abs=0.01)
        assert 0 <= example.snr_db <= 20
        gain = np.sqrt(energy(speech) / (energy(noise) * 10 ** (example.snr_db / 10)))
        np.testing.assert_allclose(rest, gain * noise, atol=1e-6)


def test_reads_only_the_tables_the_model_needs(data, tmp_path):
    copy = copy_without(data, tmp_path, "spk2enroll", "noise1.scp", "utt2uniq", "spk2utt", "utt2enroll")
    assert TSEDataset(copy, ALL, RATE, train=True, dynamic_mixing=True)[0]["enroll"].numel() > 0
    with pytest.raises(TsekitError, match="spk2enroll: file not found"):
        TSEDataset(copy, ALL, RATE, train=True, enroll="sampled")
    with pytest.raises(TsekitError, match="noise1.scp: file not found"):
        TSEDataset(copy, ALL, RATE, train=True, dynamic_mixing=True, dm_noise=True)
    # noise is a training-time option only: validation does not read noise1.scp
    TSEDataset(copy, ALL, RATE, train=False, dynamic_mixing=True, dm_noise=True)[0]
    shutil.rmtree(copy)

    copy = copy_without(data, tmp_path, "enroll.scp")
    assert TSEDataset(copy, ALL, RATE, train=True, enroll="sampled")[0]["enroll"].numel() > 0
    with pytest.raises(TsekitError, match="enroll.scp: file not found"):
        TSEDataset(copy, ALL, RATE, train=True)
    shutil.rmtree(copy)

    copy = copy_without(data, tmp_path, "spk1.scp", "utt2spk", "spk2utt", "noise1.scp", "spk2enroll", "utt2uniq")
    item = TSEDataset(copy, frozenset({"enroll"}), RATE, train=True)[0]
    assert set(item) == {"utt", "mixture", "length", "enroll"}
    with pytest.raises(TsekitError, match="spk1.scp: file not found"):
        TSEDataset(copy, frozenset({"target"}), RATE, train=True)
    with pytest.raises(TsekitError, match="utt2spk: file not found"):
        TSEDataset(copy, frozenset({"speaker"}), RATE, train=True)


def test_missing_rows_are_reported_with_the_table(data, tmp_path):
    copy = copy_without(data, tmp_path)
    lines = (copy / "spk1.scp").read_text().splitlines()
    (copy / "spk1.scp").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(TsekitError, match=r"spk1.scp: no line for 1 rows of wav.scp \(e.g. "):
        TSEDataset(copy, ALL, RATE, train=True)


def test_a_model_that_reads_text_gets_only_the_rows_that_have_one(data, tmp_path):
    """A target cut short has no transcript (LibriMix min mode): its row is left out, the others keep theirs."""
    copy = copy_without(data, tmp_path)
    rows = sorted(table(data, "wav.scp"))
    transcribed = {utt: f"WORDS OF {index}" for index, utt in enumerate(rows) if index % 3}
    write_table(copy / "text", transcribed)
    dataset = TSEDataset(copy, frozenset({"target", "text"}), RATE, train=True, chunk_seconds=None)
    assert len(dataset) == len(transcribed) and dataset.skipped == len(rows) - len(transcribed)
    assert {dataset[i]["utt"]: dataset[i]["text"] for i in range(len(dataset))} == transcribed
    assert len(TSEDataset(copy, frozenset({"target"}), RATE, train=True)) == len(rows)  # no text read: every row
    write_table(copy / "text", {})
    with pytest.raises(TsekitError, match="text: no transcript for any row of wav.scp"):
        TSEDataset(copy, frozenset({"target", "text"}), RATE, train=True, chunk_seconds=None)


def test_speaker_index_is_the_position_in_the_training_speaker_list(data):
    utt2spk = table(data, "utt2spk")
    speakers = sorted(set(utt2spk.values()))
    dataset = TSEDataset(data, frozenset({"speaker"}), RATE, train=False)
    assert dataset.speakers == speakers == sorted(read_list_table(data / "spk2utt"))
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["speaker"].dtype == torch.int64
        assert speakers[int(item["speaker"])] == utt2spk[item["utt"]]
    known = speakers[2:]
    dataset = TSEDataset(data, frozenset({"speaker"}), RATE, train=False, speakers=known)
    items = [dataset[i] for i in range(len(dataset))]
    labels = [int(item["speaker"]) for item in items]
    assert UNKNOWN_SPEAKER in labels
    for item, label in zip(items, labels, strict=True):
        spk = utt2spk[item["utt"]]
        assert label == (known.index(spk) if spk in known else -100)
    # -100 is what cross entropy ignores: a batch of only unknown speakers adds no gradient
    logits = torch.zeros(2, len(known), requires_grad=True)
    torch.nn.functional.cross_entropy(logits, torch.tensor([UNKNOWN_SPEAKER, 0]), reduction="sum").backward()
    assert logits.grad[0].abs().sum() == 0 and logits.grad[1].abs().sum() > 0


def test_wrong_sample_rate_is_a_one_line_error_naming_the_file(data):
    dataset = TSEDataset(data, ALL, 16000, train=True)
    with pytest.raises(TsekitError) as caught:
        dataset[0]
    message = str(caught.value)
    assert "\n" not in message and str(data / "wav.scp") in message
    assert "8000 Hz" in message and "16000 Hz" in message


def test_bad_options_are_errors(data):
    with pytest.raises(TsekitError, match="cannot provide 'tokens'"):
        TSEDataset(data, frozenset({"target", "tokens"}), RATE, train=True)
    with pytest.raises(TsekitError, match="unknown enrollment mode 'random'"):
        TSEDataset(data, ALL, RATE, train=True, enroll="random")
    with pytest.raises(TsekitError, match="dm_sir_range"):
        TSEDataset(data, ALL, RATE, train=True, dynamic_mixing=True, dm_sir_range=(5, -5))


def test_sampled_enrollment_excludes_same_mixture_and_same_source_rows(data, tmp_path):
    """Rows sharing the target's mixture or source utterance are never drawn; every other candidate is."""
    copy = copy_without(data, tmp_path)
    wav, utt2spk, utt2uniq = table(copy, "wav.scp"), table(copy, "utt2spk"), table(copy, "utt2uniq")
    pool = read_list_table(copy / "spk2enroll")
    speaker = max(pool, key=lambda spk: len(pool[spk]))
    target, same_mixture, same_source = pool[speaker][:3]
    wav[same_mixture] = wav[target]  # as if both rows came from one mixture
    utt2uniq[same_source] = utt2uniq[target]  # as if the same source utterance were reused
    write_table(copy / "wav.scp", wav)
    write_table(copy / "utt2uniq", utt2uniq)
    dataset = TSEDataset(copy, frozenset({"enroll"}), RATE, train=True, enroll="sampled")
    index = dataset.rows.index(target)
    drawn = set()
    for epoch in range(40):
        dataset.set_epoch(epoch)
        drawn.add(dataset.example(index).enroll_row)
    assert drawn == set(pool[speaker]) - {target, same_mixture, same_source}
    assert all(utt2spk[row] == speaker for row in drawn)


def mixture_speakers(data: Path) -> dict[str, set[str]]:
    """Speakers of every mixture file, from the rows that share it."""
    speakers: dict[str, set[str]] = {}
    for utt, entry in table(data, "wav.scp").items():
        speakers.setdefault(entry, set()).add(table(data, "utt2spk")[utt])
    return speakers


@pytest.mark.parametrize("options", [dict(enroll="fixed", enroll_seconds=0.2), dict(enroll="sampled"),
                                     dict(enroll="sampled", dynamic_mixing=True)], ids=["fixed", "sampled", "dm"])
def test_absent_targets_enroll_a_speaker_outside_the_mixture_and_are_silence(data, options):
    spk1, utt2spk, wav = table(data, "spk1.scp"), table(data, "utt2spk"), table(data, "wav.scp")
    in_mixture = mixture_speakers(data)
    common = dict(train=True, chunk_seconds=0.25, seed=6, **options)
    absent = TSEDataset(data, ALL, RATE, absent_fraction=1.0, **common)
    present = TSEDataset(data, ALL, RATE, **common)
    enrolled = set()
    for epoch in range(3):
        absent.set_epoch(epoch)
        present.set_epoch(epoch)
        for index in range(len(absent)):
            item, example = absent[index], absent.example(index)
            utt, n = item["utt"], item["length"]
            speakers = ({utt2spk[utt], utt2spk[example.interferer]} if absent.dynamic_mixing
                        else in_mixture[wav[utt]])
            assert example.presence == "absent" and utt2spk[example.enroll_row] not in speakers
            assert not item["target"].any()
            # the mixture is the present item's, the enrollment a crop of the absent speaker's clean utterance
            assert torch.equal(item["mixture"], present[index]["mixture"]) and item["mixture"][:n].abs().sum() > 0
            crop = audio(spk1[example.enroll_row])[example.enroll_start : example.enroll_start + example.enroll_frames]
            np.testing.assert_array_equal(item["enroll"].numpy(), crop)
            assert absent.speakers[int(item["speaker"])] == utt2spk[example.enroll_row]  # whose voice enrolls
            enrolled.add(utt2spk[example.enroll_row])
    assert len(enrolled) == len(set(utt2spk.values()))  # every speaker serves as someone's absent speaker


@pytest.mark.parametrize("dynamic_mixing", [False, True], ids=["static", "dm"])
def test_partly_silent_targets_speak_in_one_span_and_the_mixture_is_rebuilt_around_them(data, dynamic_mixing):
    spk1, wav = table(data, "spk1.scp"), table(data, "wav.scp")
    common = dict(train=True, chunk_seconds=0.25, enroll="sampled", dynamic_mixing=dynamic_mixing, seed=8)
    silent = TSEDataset(data, ALL, RATE, silent_fraction=1.0, **common)
    present = TSEDataset(data, ALL, RATE, **common)
    ramp = round(0.01 * RATE)
    shares, starts = [], set()
    for index in range(len(silent)):
        item, example, whole = silent[index], silent.example(index), present[index]
        n, a, length = item["length"], example.active_start, example.active_frames
        assert example.presence == "partial"
        target, mixture = item["target"].numpy(), item["mixture"].numpy()
        assert not target[:a].any() and not target[a + length :].any()
        source = audio(spk1[item["utt"]])[example.start : example.start + n]
        np.testing.assert_array_equal(target[a + ramp : a + length - ramp], source[a + ramp : a + length - ramp])
        assert np.all(np.abs(target[a : a + ramp]) <= np.abs(source[a : a + ramp]))  # faded in
        # the same interference and noise as the present item, around the kept target
        rest = whole["mixture"].numpy() - whole["target"].numpy()
        np.testing.assert_allclose(mixture, target + rest, atol=1e-6)
        if not dynamic_mixing:
            np.testing.assert_allclose(whole["mixture"][:n].numpy(), audio(wav[item["utt"]])[example.start :
                                                                                         example.start + n])
        assert np.array_equal(item["enroll"].numpy(), whole["enroll"].numpy())
        shares.append(length / n)
        starts.add(a)
    assert 0.2 - 1e-3 <= min(shares) and max(shares) <= 0.8 + 1e-3 and np.ptp(shares) > 0.3
    assert len(starts) > len(silent) // 2  # spans land at many places


def test_absent_and_silent_shares_are_drawn_at_their_rates_and_leave_the_other_choices(data):
    common = dict(train=True, chunk_seconds=0.25, enroll="sampled", dynamic_mixing=True, seed=9)
    mixed = TSEDataset(data, ALL, RATE, absent_fraction=0.3, silent_fraction=0.2, **common)
    plain = TSEDataset(data, ALL, RATE, **common)
    counts = dict.fromkeys(("present", "absent", "partial"), 0)
    for epoch in range(12):
        mixed.set_epoch(epoch)
        plain.set_epoch(epoch)
        for index in range(len(mixed)):
            example, before = mixed.example(index), plain.example(index)
            counts[example.presence] += 1
            # the chunk, the interferer and its level are the same draws as without the option
            assert (example.start, example.interferer, example.interferer_start, example.sir_db) == \
                (before.start, before.interferer, before.interferer_start, before.sir_db)
            if example.presence == "present":
                assert example == before
    total = sum(counts.values())
    assert counts["absent"] / total == pytest.approx(0.3, abs=0.07)
    assert counts["partial"] / total == pytest.approx(0.2, abs=0.07)
    # validation rows keep their presence from epoch to epoch
    valid = TSEDataset(data, ALL, RATE, train=False, absent_fraction=0.5, seed=9)
    drawn = [valid.example(index).presence for index in range(len(valid))]
    valid.set_epoch(0)
    assert drawn == [valid.example(index).presence for index in range(len(valid))] and len(set(drawn)) == 2


def test_with_absent_and_silent_targets_off_the_items_are_those_from_before_the_option(data):
    """The digest of these items as tsekit made them before absent and silent targets existed (a0d0b8b)."""
    digest = hashlib.sha256()
    for options in (dict(enroll="fixed", enroll_seconds=0.2),
                    dict(enroll="sampled", dynamic_mixing=True, dm_noise=True),
                    dict(enroll="target", chunk_seconds=None)):
        dataset = TSEDataset(data, ALL, RATE, train=True, **{"chunk_seconds": 0.25, **options}, seed=7,
                             absent_fraction=0.0, silent_fraction=0.0)
        for epoch in (0, 1):
            dataset.set_epoch(epoch)
            for index in range(len(dataset)):
                item = dataset[index]
                for key in sorted(item):
                    digest.update(key.encode())
                    value = item[key]
                    digest.update(value.numpy().tobytes() if isinstance(value, torch.Tensor) else str(value).encode())
    assert digest.hexdigest() == "21c7431529c4f6e1536ea1b7743ea8264ccb93a3fc12d3ea301e0173cd4d9664"


def test_absent_and_silent_targets_refuse_what_they_cannot_make(data, tmp_path):
    with pytest.raises(TsekitError, match="add up to more than every item"):
        TSEDataset(data, ALL, RATE, train=True, absent_fraction=0.6, silent_fraction=0.5)
    with pytest.raises(TsekitError, match="reads enroll_pos, which they do not follow"):
        TSEDataset(data, frozenset({"target", "enroll_pos"}), RATE, train=True, silent_fraction=0.1)
    with pytest.raises(TsekitError, match="reads no target"):
        TSEDataset(data, frozenset({"enroll"}), RATE, train=True, silent_fraction=0.1)
    with pytest.raises(TsekitError, match="reads no enrollment"):
        TSEDataset(data, frozenset({"target"}), RATE, train=True, absent_fraction=0.1)
    TSEDataset(data, frozenset({"target"}), RATE, train=True, silent_fraction=0.1)[0]  # silence needs none
    copy = copy_without(data, tmp_path)
    utt2spk = table(copy, "utt2spk")
    two = sorted(set(utt2spk.values()))[:2]
    write_table(copy / "utt2spk", {utt: two[i % 2] for i, utt in enumerate(sorted(utt2spk))})
    with pytest.raises(TsekitError, match=r"utt2spk: 2 speakers, and a mixture holds 2: absent targets need a "
                                          "speaker outside every mixture"):
        TSEDataset(copy, ALL, RATE, train=True, absent_fraction=0.1)
