"""Speculative greedy decoding gives plain greedy decoding's tokens, whatever is proposed.

Property tests over many cursors of real code on tiny seeded random models: the engine's own proposer,
an oracle that proposes greedy decoding's continuation (so long runs are accepted and the tree's KV
bookkeeping is exercised), and adversaries (random trees, near misses, EOS, nothing at all), with token
healing, the line and block stop rules and a monitored identifier (the lookahead). A runner that adds
float noise to every many-row forward (as matrix kernels summing in another order do) checks the
exactness guard: with the guard the output stays greedy decoding's, without it the output changes.
Where a runner computes a few rows exactly as steps (bf16 q4 on a CPU with bf16 units), only chains are
verified and the log-probabilities match bit for bit, with no replay; the real models are checked too.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import random
import textwrap
from collections import Counter
from collections.abc import Sequence

import pytest
import torch
from test_lookahead import NAMES
from test_lookahead import setup as monitored_setup
from tiny import tiny_model

from superpie.cache.cursor import CursorView
from superpie.cache.document import DocumentCache
from superpie.completion.config import DecodingConfig, EngineConfig, PostprocessConfig
from superpie.completion.decoding import speculative
from superpie.completion.decoding.greedy import chain_decode
from superpie.completion.decoding.proposals import (
    Acceptance,
    DocumentLookup,
    Path,
    ProposalTree,
    Speculation,
    TreeLimit,
    merge,
)
from superpie.completion.decoding.speculative import SpeculationStats, Speculator, speculative_decode, tree_limit
from superpie.completion.decoding.stops import stop_rule
from superpie.completion.decoding.task import DecodeTask, task_constraints
from superpie.completion.engine import Engine
from superpie.completion.model.fast_llama import FastLlama
from superpie.completion.model.precision import COMPACT_MAX_ROWS, PRECISIONS, native_bf16
from superpie.completion.request import CompletionRequest

SOURCE = inspect.getsource(textwrap)[:5000]


def document(kind: str, text: str = SOURCE, runner=None) -> DocumentCache:
    lm = tiny_model(kind)
    doc = DocumentCache(lm.model, lm.tokenizer, lm.rope, mode="exact", runner=runner or lm.runner)
    doc.sync(text)
    return doc


def cursors(count: int, seed: int, text: str = SOURCE) -> list[int]:
    """Offsets inside lines (mid-token ones too, so token healing runs) and at line starts."""
    rng = random.Random(seed)
    return sorted(rng.randrange(200, len(text) - 1) for _ in range(count))


def task_at(kind: str, doc: DocumentCache, offset: int, max_tokens: int, multiline: bool) -> tuple[DecodeTask, int]:
    lm = tiny_model(kind)
    split = doc.split_at(offset)
    n = split.prefix_len
    stop = stop_rule(doc.text, offset, multiline, PostprocessConfig())
    return DecodeTask(doc.ids[n - 1], max_tokens, split.typed, stop, task_constraints(lm, split.typed)), n


class Oracle:
    """Proposes greedy decoding's own continuation (known in advance), now and then wrong at one node,
    with a sibling branch: the verification accepts long runs and must drop the wrong branches' KV."""

    def __init__(self, truth: Sequence[int], cursor: int, rng: random.Random, vocab: int) -> None:
        self.truth, self.cursor, self.rng, self.vocab = list(truth), cursor, rng, vocab

    def propose(self, history: Sequence[int], room: int) -> ProposalTree:
        at = len(history) - self.cursor  # tokens drafted so far
        path = self.truth[at : at + min(room, self.rng.randint(1, 8))]
        if not path:
            return ProposalTree()
        if self.rng.random() < 0.4:  # one wrong token somewhere
            i = self.rng.randrange(len(path))
            path = path[:i] + [self.rng.randrange(self.vocab)] + path[i + 1 :]
        tokens, parents = list(path), [i - 1 for i in range(len(path))]
        if room > 1 and self.rng.random() < 0.5:  # a wrong sibling: first (the path's KV then has a gap) or last
            sibling = self.rng.randrange(self.vocab)
            if self.rng.random() < 0.5:
                tokens, parents = [sibling] + tokens, [-1] + [p + 1 if p >= 0 else -1 for p in parents]
            else:
                tokens, parents = tokens + [sibling], parents + [self.rng.randrange(-1, len(path) - 1)]
        return ProposalTree(tuple(tokens), tuple(parents), ("oracle",) * len(tokens))

    def learn(self, tree: ProposalTree, decisions: Sequence[tuple[int, int]]) -> None:
        pass

    def observe(self, tokens: Sequence[int], logp: torch.Tensor, seconds: float) -> None:
        pass


class Adversary(Oracle):
    """Random trees: deep chains, wide fans, EOS, the same token under several parents, near misses."""

    def propose(self, history: Sequence[int], room: int) -> ProposalTree:
        rng = self.rng
        style = rng.choice(["chain", "fan", "random", "near", "eos", "none"])
        size = min(room, rng.randint(1, 10))
        if style == "none" or size <= 0:
            return ProposalTree()
        if style == "near":
            return super().propose(history, room)
        tokens: list[int] = []
        parents: list[int] = []
        for i in range(size):
            tokens.append(0 if style == "eos" and rng.random() < 0.5 else rng.randrange(self.vocab))
            if style == "chain":
                parents.append(i - 1)
            elif style == "fan":
                parents.append(-1)
            else:
                parents.append(rng.randrange(-1, i))
        return ProposalTree(tuple(tokens), tuple(parents), ("adversary",) * size)


def both(kind, doc, offset, source, max_tokens=20, multiline=False, seed=0):
    """Plain greedy and speculative drafts at one cursor; the speculator's stats."""
    lm = tiny_model(kind)
    task, n = task_at(kind, doc, offset, max_tokens, multiline)
    plain = chain_decode(lm, CursorView(doc, n - 1, reserve=64), task)
    rng = random.Random(seed)
    proposals = {
        "engine": lambda: Speculation().proposer(doc.ids, n),
        "oracle": lambda: Oracle(plain.tokens, n, rng, lm.vocab_size),
        "adversary": lambda: Adversary(plain.tokens, n, rng, lm.vocab_size),
    }[source]()
    speculator = Speculator(proposals)
    fast = speculative_decode(lm, CursorView(doc, n - 1, reserve=64), task, speculator)
    return plain, fast, speculator.stats


@pytest.mark.parametrize("kind", ["llama", "phi"])
@pytest.mark.parametrize("source", ["engine", "oracle", "adversary"])
def test_speculative_decoding_gives_greedy_decodings_tokens_at_every_cursor(kind, source):
    doc = document(kind)
    total = SpeculationStats()
    healed = 0
    for i, offset in enumerate(cursors(24, seed=hash((kind, source)) % 1000)):
        multiline = i % 3 == 0
        plain, fast, stats = both(kind, doc, offset, source, multiline=multiline, seed=i)
        assert fast.tokens == plain.tokens, (offset, source)
        assert fast.text == plain.text and fast.finished == plain.finished
        assert fast.token_logprobs == pytest.approx(plain.token_logprobs, abs=1e-3)
        healed += bool(doc.split_at(offset).typed)
        total.add(stats)
    assert healed, "no cursor inside a token: healing untested"
    if source != "engine":  # the random model copies nothing, so only planted proposals are accepted
        assert total.accepted > 0 and total.forwards < total.plain_forwards, total.to_json()


def test_a_kernel_that_rounds_activations_takes_the_reduced_guard_and_the_engine_does_not_speculate():
    """int8dyn computes in fp32 but its few rows go through int8 activations: with fp32's guard a tree's rows,
    which differ from a chain's by that rounding, changed the output at 14 of 16 cursors of this model; with
    the reduced guard at 1 of 16 (its trees of more than 4 rows take fp16 weights, and dyn8 quantizes the
    activations per call, one scale for all rows). So the engine does not speculate on it, nor on any model
    whose decoding rounds activations (bf16 compute measured slower with speculation)."""
    base = tiny_model("llama")
    model = copy.deepcopy(base.model)
    lm = dataclasses.replace(base, model=model, runner=FastLlama(model, PRECISIONS["int8dyn"]), precision="int8dyn")
    assert lm.dtype == torch.float32 and lm.rounds_activations and not lm.speculates
    assert speculative.guard_for(lm) == speculative.GUARD_REDUCED
    assert speculative.guard_for(base) == speculative.GUARD_FP32 and base.speculates
    config = EngineConfig()
    config.decoding = DecodingConfig(max_tokens=8)
    done = Engine(config, lm=lm).complete(CompletionRequest("mem://t.py", SOURCE, 300, speculate=True, monitors=False))
    assert done.completions and done.speculation is None


def test_long_accepted_runs_save_forwards():
    doc = document("llama")
    total = SpeculationStats()
    for i, offset in enumerate(cursors(10, seed=5)):
        plain, fast, stats = both("llama", doc, offset, "oracle", max_tokens=24, seed=i)
        assert fast.tokens == plain.tokens
        total.add(stats)
    assert total.tokens_per_forward > 1.5, total.to_json()


def test_a_monitored_identifier_is_spelled_as_greedy_decoding_spells_it():
    spec = Speculation()
    replayed = 0
    for names in list(itertools.combinations(NAMES[:8], 3))[:16]:
        lm, doc, n, task = monitored_setup(names, 6, max_tokens=16)
        plain = chain_decode(lm, CursorView(doc, n - 1, reserve=64), task)
        for proposer in (spec.proposer(doc.ids, n), Oracle(plain.tokens, n, random.Random(1), lm.vocab_size)):
            speculator = Speculator(proposer)
            fast = speculative_decode(lm, CursorView(doc, n - 1, reserve=64), task, speculator)
            assert fast.tokens == plain.tokens, names
            assert fast.token_constrained == plain.token_constrained
            replayed += speculator.stats.replays
    assert replayed, "no identifier was met after speculated tokens: the replay went untested"


def test_nothing_proposed_is_plain_decoding_one_row_per_forward():
    doc = document("llama")
    lm = tiny_model("llama")
    for offset in cursors(6, seed=3):
        task, n = task_at("llama", doc, offset, 16, False)
        plain = chain_decode(lm, CursorView(doc, n - 1, reserve=64), task)
        speculator = Speculator(Adversary([], n, random.Random(0), 1))
        speculator.proposals.propose = lambda history, room: ProposalTree()  # type: ignore[method-assign]
        fast = speculative_decode(lm, CursorView(doc, n - 1, reserve=64), task, speculator)
        assert fast.tokens == plain.tokens
        assert speculator.stats.forwards == speculator.stats.plain_forwards and speculator.stats.proposed == 0


NOISE = 0.04  # logits of a many-row forward move by up to this much, so a gap moves by up to twice it
GUARD = 0.1  # the guard the noisy tests run with (the fp32 guard scaled as the noise is)


class NoisyRunner:
    """The model's runner, with noise added to the logits and K/V of every forward of several rows in the
    scratch area: a stand-in for the many-row kernels' other summation order, large enough to flip
    close calls (but well under the fp32 guard)."""

    def __init__(self, inner, scratch_from: int, scale: float = NOISE) -> None:
        self.inner, self.scratch_from, self.scale = inner, scratch_from, scale
        self.gen = torch.Generator().manual_seed(0)

    @property
    def kv_dtype(self) -> torch.dtype:
        return self.inner.kv_dtype

    def __call__(self, store, write_at, positions, mask, input_ids=None, inputs_embeds=None, logits_for=1):
        logits = self.inner(store, write_at, positions, mask, input_ids, inputs_embeds, logits_for)
        n = positions.numel()
        if n == 1 or write_at < self.scratch_from:
            return logits
        for layer in range(store.num_layers):
            keys, values = store.buffers(layer)
            for t in (keys, values):
                part = t[:, :, write_at : write_at + n]
                part += 0.1 * self.scale * torch.randn(part.shape, generator=self.gen) * part.abs().mean()
        return logits + self.scale * (2 * torch.rand(logits.shape, generator=self.gen) - 1)


def noisy_mismatches(monkeypatch, guard: float) -> tuple[int, int]:
    monkeypatch.setattr(speculative, "GUARD_FP32", guard)
    lm = tiny_model("llama")
    clean = document("llama")
    noisy = DocumentCache(lm.model, lm.tokenizer, lm.rope, mode="exact", runner=NoisyRunner(lm.runner, 10**9))
    noisy.sync(SOURCE)
    noisy.runner.scratch_from = noisy.length  # type: ignore[attr-defined]
    mismatches = sites = 0
    for i, offset in enumerate(cursors(20, seed=11)):
        task, n = task_at("llama", clean, offset, 24, True)
        plain = chain_decode(lm, CursorView(clean, n - 1, reserve=64), task)
        speculator = Speculator(Oracle(plain.tokens, n, random.Random(i), lm.vocab_size))
        fast = speculative_decode(lm, CursorView(noisy, n - 1, reserve=64), task, speculator)
        mismatches += fast.tokens != plain.tokens
        sites += 1
    return mismatches, sites


def test_the_guard_keeps_greedy_decodings_output_under_many_row_float_noise(monkeypatch):
    assert noisy_mismatches(monkeypatch, GUARD) == (0, 20)


def test_without_the_guard_the_many_row_noise_changes_the_output(monkeypatch):
    """The noise above does flip close calls: so the test above would fail if the guard were broken."""
    mismatches, _ = noisy_mismatches(monkeypatch, 0.0)
    assert mismatches > 0


def test_prompt_lookup_proposes_what_followed_the_longest_nearest_match():
    ids = [1, 2, 3, 4, 9, 9, 1, 2, 3, 5, 6, 7, 8, 1, 2, 3]
    lookup = DocumentLookup(ids, cursor=len(ids))
    paths = lookup.paths(ids, 3)
    assert paths[0].tokens == (5, 6, 7)  # [1, 2, 3] matched twice: the nearer one first
    assert paths[1].tokens == (4, 9, 9)  # another first token: a second branch
    assert [p.kinds[0] for p in paths] == ["doc3", "doc3"]


def test_a_kind_that_is_never_taken_stops_being_proposed_and_returns_later():
    acceptance = Acceptance()
    path = Path((5, 6, 7), ("doc1", "doc+", "doc+"))
    assert len(merge([path], acceptance, 8, 0.2)) > 0
    for _ in range(40):
        acceptance.record("doc1", False)
    assert len(merge([path], acceptance, 8, 0.2)) == 0  # adaptive: nothing verified where nothing is taken
    for _ in range(40):
        acceptance.relax()
    assert len(merge([path], acceptance, 8, 0.2)) > 0  # rates drift back to the prior: tried again


def test_merge_keeps_every_parent_and_the_likeliest_path_first():
    acceptance = Acceptance()
    tree = merge(
        [Path((1, 2, 3, 4), ("doc3",) + ("doc+",) * 3), Path((1, 5), ("rec", "rec+")), Path((6,), ("rec",))],
        acceptance,
        8,
        0.0,
    )
    assert tree.tokens[:4] == (1, 2, 3, 4) and tree.chain is False
    for i, p in enumerate(tree.parents):
        assert p < i


def test_the_engine_speculates_on_request_with_the_same_completions():
    config = EngineConfig()
    config.decoding = DecodingConfig(max_tokens=12)
    engine = Engine(config, lm=tiny_model("llama"))
    for offset in cursors(6, seed=2):
        text = SOURCE
        on = engine.complete(CompletionRequest("mem://t.py", text, offset, speculate=True, monitors=False))
        off = engine.complete(CompletionRequest("mem://t.py", text, offset, speculate=False, monitors=False))
        assert [c.tokens for c in on.completions] == [c.tokens for c in off.completions]
        assert [c.text for c in on.completions] == [c.text for c in off.completions]
        assert on.speculation is not None and on.speculation.forwards > 0 and off.speculation is None
    beam = engine.complete(CompletionRequest("mem://t.py", SOURCE, 300, drafts=2, strategy="beam", speculate=True))
    assert beam.speculation is None  # beam's drafts are not greedy: nothing to speculate


def test_the_front_doors_set_speculation(tmp_path):
    from superpie.lsp.cli import build_parser, config_from_flags
    from superpie.lsp.options import parse_options
    from superpie.lsp.replay import Replayer, ReplayError
    from superpie.lsp.stats import speculation_json

    for flag, value in (("on", True), ("off", False)):
        args = build_parser().parse_args(["complete", "f.py", "--line", "0", "--character", "0", "--speculate", flag])
        assert config_from_flags(args).decoding.speculate is value
    assert parse_options({"decoding": {"speculate": True}}).options.decoding.speculate is True
    config = EngineConfig()
    config.decoding = DecodingConfig(max_tokens=6)
    replayer = Replayer(Engine(config, lm=tiny_model("llama")), tmp_path)
    replayer.apply(1, {"op": "open", "uri": "a.py", "text": SOURCE[:400]})
    with pytest.raises(ReplayError, match="speculate"):
        replayer.apply(2, {"op": "complete", "uri": "a.py", "position": {"line": 3, "character": 0}, "speculate": 1})
    out = replayer.apply(
        3, {"op": "complete", "uri": "a.py", "position": {"line": 3, "character": 0}, "speculate": True}
    )
    assert out is not None and out.result.speculation is not None
    counts = Counter(out.result.speculation.counts())
    summary = speculation_json(counts + counts)
    assert summary["forwards"] == 2 * out.result.speculation.forwards
    assert summary["tokens_per_forward"] == round(out.result.speculation.tokens_per_forward, 4)


def test_where_rows_measure_dear_the_tree_shrinks_and_where_cheap_it_grows():
    from superpie.completion.decoding.proposals import ForwardCost

    path = Path((5, 6, 7, 8), ("doc3", "doc+", "doc+", "doc+"))
    cheap, dear = ForwardCost(), ForwardCost()
    for rows in range(1, 9):
        cheap.record(rows, 1.0 + 0.01 * (rows - 1))
        dear.record(rows, 1.0 + 1.0 * (rows - 1))
    assert len(merge([path], Acceptance(), 8, 0.0, cheap)) == 4
    assert len(merge([path], Acceptance(), 8, 0.0, dear)) == 0  # a second row costs a whole forward: none pays
    for _ in range(60):
        dear.relax()
    assert len(merge([path], Acceptance(), 8, 0.0, dear)) > 0  # back near the prior: tried again


def test_a_chain_limit_proposes_the_one_path_prefix_that_pays_best():
    acceptance = Acceptance()
    sure = Path((5, 6, 7, 8), ("doc3", "doc+", "doc+", "doc+"))  # 0.6, then 0.7 a token
    doubtful = Path((9, 10), ("rec", "rec+"))  # 0.3, 0.09: a branch merge would add beside it
    tree = merge([doubtful, sure], acceptance, 3, 0.2, chain=True)
    assert tree.chain and tree.tokens == (5, 6, 7)  # the budget cuts the likelier path
    assert len(merge([doubtful, sure], acceptance, 7, 0.2)) == 5  # no chain limit: both paths, one branch
    assert merge([doubtful], acceptance, 3, 0.5, chain=True).tokens == ()  # nothing worth its row
    tree = ProposalTree((1, 2, 3, 4), (-1, 0, -1, 2), ("doc1",) * 4)
    assert tree.leading_chain(3).tokens == (1, 2) and tree.leading_chain(1).tokens == (1,)
    assert tree.leading_chain(3).chain and tree.leading_chain(0).tokens == ()


def test_the_tree_limit_follows_what_the_runner_computes_exactly():
    base = tiny_model("llama")
    assert tree_limit(base) == TreeLimit()  # fp32 activations: any tree, under the fp32 guard
    model = copy.deepcopy(base.model)
    int8dyn = dataclasses.replace(base, model=model, runner=FastLlama(model, PRECISIONS["int8dyn"]))
    assert tree_limit(int8dyn) == TreeLimit(nodes=0, chain=True) and not int8dyn.speculates


class ChainOracle(Oracle):
    """Greedy decoding's continuation as a chain the exact rows cover, now and then wrong at one token."""

    def propose(self, history: Sequence[int], room: int) -> ProposalTree:
        at = len(history) - self.cursor
        path = self.truth[at : at + min(room, self.rng.randint(1, COMPACT_MAX_ROWS - 1))]
        if path and self.rng.random() < 0.3:
            i = self.rng.randrange(len(path))
            path = path[:i] + [self.rng.randrange(self.vocab)] + path[i + 1 :]
        return ProposalTree(tuple(path), tuple(range(-1, len(path) - 1)), ("oracle",) * len(path))


class Recording:
    """Passes a proposer's trees through, keeping them."""

    def __init__(self, inner) -> None:
        self.inner, self.trees = inner, []

    def propose(self, history, room):
        tree = self.inner.propose(history, room)
        self.trees.append(tree)
        return tree

    def learn(self, tree, decisions):
        self.inner.learn(tree, decisions)

    def observe(self, tokens, logp, seconds):
        self.inner.observe(tokens, logp, seconds)


@pytest.mark.skipif(not native_bf16(), reason="bf16 q4 rows are exact only with bf16 matrix units")
@pytest.mark.parametrize("source", ["engine", "chain oracle", "adversary"])
def test_where_rows_are_exact_bf16_speculation_gives_greedy_decodings_tokens_without_replays(source):
    """`auto` on a CPU with bf16 units: a chain of up to 4 rows is computed as plain decoding's steps, so the
    engine proposes only such chains and every row is decided with no guard and no replay. Any other tree (the
    adversary's) is cut to its leading chain: beyond 4 rows the projections take the bf16 weights instead of
    q4 ones, a difference no guard covers (without the cut the output changed at 1 of these 16 cursors)."""
    base = tiny_model("llama")
    model = copy.deepcopy(base.model)
    lm = dataclasses.replace(base, model=model, runner=FastLlama(model, PRECISIONS["q4"]), precision="q4")
    assert lm.rounds_activations and lm.speculates and tree_limit(lm) == TreeLimit(COMPACT_MAX_ROWS - 1, True)
    doc = DocumentCache(lm.model, lm.tokenizer, lm.rope, mode="exact", runner=lm.runner)
    doc.sync(SOURCE)
    total = SpeculationStats()
    for i, offset in enumerate(cursors(16, seed=7)):
        task, n = task_at("llama", doc, offset, 16, multiline=i % 3 == 0)
        plain = chain_decode(lm, CursorView(doc, n - 1, reserve=64), task)
        rng = random.Random(i)
        if source == "engine":
            inner = Speculation().proposer(doc.ids, n, limit=tree_limit(lm))
        elif source == "chain oracle":
            inner = ChainOracle(plain.tokens, n, rng, lm.vocab_size)
        else:
            inner = Adversary(plain.tokens, n, rng, lm.vocab_size)
        proposer = Recording(inner)
        speculator = Speculator(proposer)
        fast = speculative_decode(lm, CursorView(doc, n - 1, reserve=64), task, speculator)
        assert fast.tokens == plain.tokens and fast.text == plain.text, (offset, source)
        assert fast.token_logprobs == plain.token_logprobs  # bit for bit: the rows are plain decoding's
        if source == "engine":
            assert all(t.chain and len(t) < COMPACT_MAX_ROWS for t in proposer.trees)
        total.add(speculator.stats)
    assert total.replays == 0, total.to_json()
    if source == "chain oracle":
        assert total.accepted > 0 and total.forwards < total.plain_forwards, total.to_json()


def real_sites(count: int, seed: int) -> list[tuple[str, int]]:
    """Single-line sites in a stdlib module: the line's rest removed, the cursor in its first half."""
    import difflib

    text = inspect.getsource(difflib)[:6000]  # about 1.5k tokens: the first encode stays short
    lines = text.splitlines(keepends=True)
    starts = list(itertools.accumulate((len(line) for line in lines), initial=0))
    code = [i for i, line in enumerate(lines) if 12 <= len(line.strip()) <= 90 and not line.strip().startswith("#")]
    out = []
    for i in random.Random(seed).sample(code[20:], count):
        body = lines[i].rstrip("\n")
        cut = starts[i] + len(body) - len(body.lstrip()) + len(body.strip()) // 3
        out.append((text[:cut] + text[starts[i] + len(body) :], cut))
    return out


@pytest.mark.real_model
@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-coder-0.5b"])
def test_on_the_real_models_speculation_gives_greedy_decodings_completions(name):
    """At `auto` precision, as shipped: on a CPU with bf16 units the exact chains (no replay), elsewhere the fp32
    trees under the guard. The same completions with speculation on and off, through the engine."""
    from superpie.completion.model.catalog import MODELS, installed

    if not installed(MODELS[name]):
        pytest.skip(f"{name} is not installed")
    config = EngineConfig()
    config.decoding = DecodingConfig(max_tokens=16)
    config.model.path = name
    engine = Engine(config)
    total = SpeculationStats()
    for text, offset in real_sites(12, seed=3):
        on = engine.complete(CompletionRequest("mem://d.py", text, offset, speculate=True, monitors=False))
        off = engine.complete(CompletionRequest("mem://d.py", text, offset, speculate=False, monitors=False))
        assert [c.tokens for c in on.completions] == [c.tokens for c in off.completions], offset
        assert [c.text for c in on.completions] == [c.text for c in off.completions], offset
        assert on.speculation is not None
        total.add(on.speculation)
    assert total.accepted > 0, total.to_json()
    assert engine.lm is not None
    if engine.lm.exact_rows > 1:
        assert total.replays == 0, total.to_json()
    engine.shutdown()
