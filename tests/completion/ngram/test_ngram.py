import os
import random
from pathlib import Path

import pytest
import torch

from superpie.completion.config import NgramConfig
from superpie.completion.ngram.index import NgramIndex

VOCAB = 128


def encode(text: str) -> list[int]:
    return [min(ord(c), VOCAB - 1) for c in text]


def make(tmp_path: Path, **config) -> NgramIndex:
    return NgramIndex(
        tmp_path / "ws", encode, vocab_size=VOCAB, tokenizer_id="chars",
        config=NgramConfig(**config), cache_dir=tmp_path / "cache",
    )  # fmt: skip


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    write(root, "a.py", "def add(a, b):\n    return a + b\n")
    write(root, "pkg/b.py", "import os\n\ndef add_all(xs):\n    return sum(xs)\n")
    return root


def build(tmp_path: Path, **config) -> NgramIndex:
    return NgramIndex.build(
        tmp_path / "ws", encode, vocab_size=VOCAB, tokenizer_id="chars",
        config=NgramConfig(**config), cache_dir=tmp_path / "cache",
    )  # fmt: skip


def test_counts_match_a_hand_count(ws: Path, tmp_path: Path) -> None:
    counts = build(tmp_path).counts()
    text_a = (ws / "a.py").read_text()
    text_b = (ws / "pkg/b.py").read_text()
    assert counts[(ord("d"),)] == (text_a + text_b).count("d")
    assert counts[tuple(map(ord, "add"))] == 2
    assert counts[tuple(map(ord, "retu"))] == 2
    assert all(len(k) <= 4 for k in counts)


def _mutate(rng: random.Random, text: str) -> str:
    i = rng.randrange(len(text) + 1)
    j = min(len(text), i + rng.randrange(6))
    return text[:i] + rng.choice(["", "x", "add(", "\n    ", "return a"]) + text[j:]


def test_incremental_updates_equal_a_rebuild(ws: Path, tmp_path: Path) -> None:
    index = build(tmp_path, persist=False)
    rng = random.Random(0)
    text = (ws / "a.py").read_text()
    for _ in range(40):  # edits at random places exercise the windowed recount
        text = _mutate(rng, text)
        index.update_file(ws / "a.py", text)
    (ws / "a.py").write_text(text)
    index.remove_file(ws / "pkg/b.py")
    (ws / "pkg/b.py").unlink()
    write(ws, "c.py", "class C:\n    pass\n")
    index.update_file(ws / "c.py")
    index.update_document("untitled:1", "x = add(1, 2)\n")
    index.update_document((ws / "c.py").as_uri(), "class C:\n    x = 1\n")

    rebuilt = build(tmp_path, persist=False)
    rebuilt.update_document("untitled:1", "x = add(1, 2)\n")
    rebuilt.update_document((ws / "c.py").as_uri(), "class C:\n    x = 1\n")
    assert index.counts() == rebuilt.counts()
    assert len(rebuilt.counts()) > 100
    assert index.num_ngrams == rebuilt.num_ngrams
    cands = torch.arange(VOCAB)
    ctx = encode("ret")
    assert torch.allclose(index.logprobs(ctx, cands), rebuilt.logprobs(ctx, cands))


def test_closing_a_document_goes_back_to_the_disk(ws: Path, tmp_path: Path) -> None:
    index = build(tmp_path, persist=False)
    before = index.counts()
    index.update_document((ws / "a.py").as_uri(), "zzz = 1\n")
    index.update_file(ws / "a.py", "ignored while the buffer is open\n")
    assert index.counts()[(ord("z"),) * 3] == 1
    index.close_document((ws / "a.py").as_uri())
    assert index.counts() == before


@pytest.mark.parametrize("context", ["", "r", "re", "ret", "  return", "qqqq", "(a, "])
def test_probabilities_sum_to_one_over_the_vocab(ws: Path, tmp_path: Path, context: str) -> None:
    index = build(tmp_path, persist=False)
    lp = index.logprobs(encode(context), torch.arange(VOCAB))
    assert lp.shape == (VOCAB,)
    assert lp.double().exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_empty_index_is_uniform(tmp_path: Path) -> None:
    lp = make(tmp_path, persist=False).logprobs([1, 2, 3], [0, 5, 127])
    assert torch.allclose(lp, torch.full((3,), -torch.log(torch.tensor(float(VOCAB)))))


def test_seen_continuations_beat_unseen_ones(ws: Path, tmp_path: Path) -> None:
    index = build(tmp_path, persist=False)
    lp = index.logprobs(encode("retu"), encode("rx"))
    assert lp[0] > lp[1] + 2.0
    assert lp[0] > -0.5  # 'retu' -> 'r' every time it was seen


def test_candidate_shapes_and_tensor_context(ws: Path, tmp_path: Path) -> None:
    index = build(tmp_path, persist=False)
    cands = torch.tensor([[ord("r"), ord("x")], [ord("a"), 300]])  # 300: a padded-embedding id
    lp = index.logprobs(torch.tensor(encode("  retu")), cands)
    assert lp.shape == (2, 2) and lp.dtype == torch.float32 and torch.isfinite(lp).all()
    assert lp[0, 0] == index.logprobs(encode("retu"), [ord("r")])[0]
    batch = index.logprobs_batch([encode("retu"), encode("ad")], cands)
    assert batch[1, 0] == index.logprobs(encode("ad"), [ord("a")])[0]


def test_persistence_round_trip_re_encodes_only_changed_files(ws: Path, tmp_path: Path) -> None:
    first = build(tmp_path)
    assert first.cache_path.exists() and first.cache_path.parent == tmp_path / "cache"
    calls: list[str] = []

    def counting(text: str) -> list[int]:
        calls.append(text)
        return encode(text)

    again = NgramIndex(ws, counting, vocab_size=VOCAB, tokenizer_id="chars", cache_dir=tmp_path / "cache")
    assert again.counts() == first.counts()  # loaded lazily by the first query
    assert again.refresh() == 0 and calls == []
    (ws / "a.py").write_text("def add(a, b):\n    return b + a  # swapped\n")
    os.utime(ws / "a.py", ns=(1, 1))
    assert again.refresh() == 1 and len(calls) == 1
    assert again.counts() == build(tmp_path, persist=False).counts()


def test_cache_is_keyed_by_tokenizer(ws: Path, tmp_path: Path) -> None:
    first = build(tmp_path)
    other = NgramIndex(ws, encode, vocab_size=VOCAB, tokenizer_id="other", cache_dir=tmp_path / "cache")
    assert other.cache_path != first.cache_path
    assert other.counts() == {}


def test_corrupt_cache_is_ignored(ws: Path, tmp_path: Path) -> None:
    path = build(tmp_path).cache_path
    path.write_bytes(b"not a zip")
    index = make(tmp_path)
    assert index.counts() == {}
    assert index.refresh() == 2


def test_ignored_dirs_big_files_and_non_python_are_skipped(ws: Path, tmp_path: Path) -> None:
    for rel in [".git/x.py", "node_modules/m/x.py", "build/x.py", ".venv/lib/x.py", "proj.egg-info/x.py"]:
        write(ws, rel, "skip = 1\n")
    write(ws, "myenv/pyvenv.cfg", "home = /usr\n")
    write(ws, "myenv/lib/x.py", "skip = 1\n")
    write(ws, "notes.txt", "skip = 1\n")
    write(ws, "big.py", "x = 1\n" * 200_000)  # 1.2 MB
    index = build(tmp_path, persist=False)
    assert [Path(f).name for f in index.files] == ["a.py", "b.py"]


def test_file_count_and_ngram_caps(ws: Path, tmp_path: Path) -> None:
    for i in range(5):
        write(ws, f"gen{i}.py", "".join(chr(33 + (i * 7 + j * 13) % 90) for j in range(400)))
    assert len(build(tmp_path, persist=False, max_files=3).files) == 3
    capped = build(tmp_path, persist=False, max_ngrams=500)
    assert 0 < capped.num_ngrams <= 500
    lp = capped.logprobs(encode("ret"), torch.arange(VOCAB))
    assert lp.double().exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_ids_outside_the_vocabulary_are_rejected(tmp_path: Path) -> None:
    index = NgramIndex(
        tmp_path, lambda s: [VOCAB], vocab_size=VOCAB, tokenizer_id="x", config=NgramConfig(persist=False)
    )
    with pytest.raises(ValueError, match="outside the vocabulary"):
        index.update_document("untitled:1", "x")
