"""The dataset's codec tokens: read from tsekit tokenize's outputs, aligned with the chunk they cover, padded
in batches, and refused with a one-line error when they are missing or cannot exist.

The data dir and codec are those of test_tokenize (EnCodec 24 kHz architecture, random weights); expected
tokens are read straight from the arks with kaldiio, so the test checks the dataset's crop and padding.
"""

from __future__ import annotations

import math
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from tsekit import TsekitError
from tsekit.data.dataset import PAD_TOKEN, TSEDataset, collate
from tsekit.data.table import read_table

pytest.importorskip("encodec")
from test_tokenize import RATE, build_data, run, weights  # noqa: E402, F401  (weights: the module's fixture)

NEEDS = frozenset({"mixture_tokens", "target_tokens", "enroll_tokens"})


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory, weights) -> tuple[Path, Path]:  # noqa: F811
    root = tmp_path_factory.mktemp("tokens")
    data = build_data(root)
    out = root / "dump" / "test"
    run(data, out, weights)
    return data, out


def arks(out: Path, signal: str) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in kaldiio.load_scp(str(out / signal / "tokens.scp")).items()}


def test_whole_rows_carry_every_frame_of_their_tokens(one_torch_thread, tokenized):
    data, out = tokenized
    dataset = TSEDataset(data, NEEDS, RATE, train=False, tokens_dir=out)
    mixture, target, enroll = arks(out, "mixture"), arks(out, "target"), arks(out, "enroll")
    for index, utt in enumerate(dataset.rows):
        item = dataset[index]
        np.testing.assert_array_equal(item["mixture_tokens"].numpy(), mixture[utt])
        np.testing.assert_array_equal(item["target_tokens"].numpy(), target[utt])
        np.testing.assert_array_equal(item["enroll_tokens"].numpy(), enroll[utt])  # the fixed enrollment's


def test_a_chunk_gets_the_frames_that_cover_its_samples(one_torch_thread, tokenized):
    data, out = tokenized
    dataset = TSEDataset(data, frozenset({"mixture_tokens", "target"}), RATE, train=True, chunk_seconds=0.05,
                         tokens_dir=out)
    mixture = arks(out, "mixture")
    frame_rate = 75 / RATE  # frames per sample of the data
    starts = set()
    for index, utt in enumerate(dataset.rows):
        example = dataset.example(index)
        first = math.floor(example.start * frame_rate)
        last = math.ceil((example.start + example.frames) * frame_rate)
        tokens = dataset[index]["mixture_tokens"].numpy()
        np.testing.assert_array_equal(tokens, mixture[utt][:, first:last])
        assert tokens.shape[1] >= math.ceil(example.frames * frame_rate)  # the whole chunk is covered
        starts.add(first)
    assert len(starts) > 1  # random chunks, not always the first frames


def test_sampled_enrollments_are_the_tokens_of_the_row_whose_target_enrolls(one_torch_thread, tokenized):
    data, out = tokenized
    dataset = TSEDataset(data, frozenset({"enroll_tokens"}), RATE, train=True, chunk_seconds=None,
                         enroll="sampled", tokens_dir=out)
    target = arks(out, "target")
    for index, utt in enumerate(dataset.rows):
        example = dataset.example(index)
        assert example.enroll_row and example.enroll_row != utt
        np.testing.assert_array_equal(dataset[index]["enroll_tokens"].numpy(), target[example.enroll_row])


def test_batches_pad_tokens_and_give_their_lengths(one_torch_thread, tokenized):
    data, out = tokenized
    dataset = TSEDataset(data, NEEDS, RATE, train=False, tokens_dir=out)
    items = [dataset[i] for i in range(len(dataset))]
    batch = collate(items)
    lengths = [item["mixture_tokens"].shape[1] for item in items]
    assert len(set(lengths)) > 1  # rows of different lengths, so padding happens
    assert batch["mixture_tokens"].shape == (len(items), 4, max(lengths))
    assert batch["mixture_tokens_lengths"].tolist() == lengths
    for row, length in enumerate(lengths):
        assert torch.equal(batch["mixture_tokens"][row, :, :length], items[row]["mixture_tokens"])
        assert bool((batch["mixture_tokens"][row, :, length:] == PAD_TOKEN).all())


def test_missing_tokens_are_one_line_errors(one_torch_thread, tokenized, tmp_path):
    data, out = tokenized
    with pytest.raises(TsekitError, match="set data.tokens"):
        TSEDataset(data, NEEDS, RATE, train=False)
    with pytest.raises(TsekitError, match="codec.yaml: file not found"):
        TSEDataset(data, NEEDS, RATE, train=False, tokens_dir=tmp_path / "nothing")
    with pytest.raises(TsekitError, match="dynamic mixing"):
        TSEDataset(data, NEEDS, RATE, train=True, dynamic_mixing=True, tokens_dir=out)
    partial = tmp_path / "partial"
    (partial / "mixture").mkdir(parents=True)
    (partial / "codec.yaml").write_text((out / "codec.yaml").read_text())
    table = read_table(out / "mixture" / "tokens.scp")
    first = sorted(table)[0]
    (partial / "mixture" / "tokens.scp").write_text(f"{first} {table[first]}\n")
    with pytest.raises(TsekitError, match=r"mixture/tokens.scp: no tokens for 7 rows"):
        TSEDataset(data, frozenset({"mixture_tokens"}), RATE, train=False, tokens_dir=partial)
