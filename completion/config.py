"""One typed configuration tree shared by the CLI, the server and the Python API.

Each component receives only its slice (`ModelConfig`, `CacheConfig`, `DecodingConfig` and its
`SuperposedConfig` / `VerifyConfig`, `NgramConfig`, `PostprocessConfig`,
`MonitorConfig`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from superpie.analysis.workspace_files import IGNORED_DIRS

STRATEGIES = ("greedy", "superposed", "beam")


@dataclass(frozen=True)
class NgramConfig:
    """The n-gram index's slice of the configuration."""

    order: int = 4
    max_ngrams: int = 500_000  # distinct n-grams of order >= 2
    max_files: int = 5_000
    max_file_bytes: int = 1_000_000
    ignored_dirs: frozenset[str] = IGNORED_DIRS
    persist: bool = True


@dataclass(frozen=True)
class StopConfig:
    """Where drafts end."""

    max_lines: int = 16  # multi-line drafts are cut after this many lines


@dataclass(frozen=True)
class SuffixConfig:
    """Dropping drafts that repeat the text after the cursor."""

    enabled: bool = True
    compare_lines: int = 3  # upcoming non-blank lines a draft is compared with


@dataclass(frozen=True)
class BracketConfig:
    """Cutting drafts that close brackets nobody opened."""

    enabled: bool = True


@dataclass(frozen=True)
class IndentConfig:
    """Re-indenting drafts to the document's style."""

    enabled: bool = True


@dataclass(frozen=True)
class RankConfig:
    """Weights of the rank score (see `rank`)."""

    length_alpha: float = 1.0  # 1: mean log-prob per token; 0: total log-prob
    syntax_penalty: float = 2.0  # per syntax error the draft adds, up to max_syntax_errors (0: no parse)
    # errors counted per draft: past the first, the count is tree-sitter's recovery, not the draft (two
    # drafts that open the same unterminated docstring differ by what the string swallows), so 1
    max_syntax_errors: int = 1
    monitor_penalty: float = 2.0  # times (1 - monitor_score)
    # added to the greedy draft's score: on the multi-draft benchmark a draft whose mean log-prob beats the
    # greedy line's was no likelier to be the real line, so alternatives come after the greedy line unless
    # it adds syntax errors or fails a monitor
    greedy_bonus: float = 1.0


@dataclass(frozen=True)
class PostprocessConfig:
    """Post-processing's slice of the configuration, one sub-slice per filter family."""

    stop: StopConfig = field(default_factory=StopConfig)
    suffix: SuffixConfig = field(default_factory=SuffixConfig)
    brackets: BracketConfig = field(default_factory=BracketConfig)
    indent: IndentConfig = field(default_factory=IndentConfig)
    rank: RankConfig = field(default_factory=RankConfig)

    def with_delta(self, delta: Mapping[str, Mapping[str, object]]) -> PostprocessConfig:
        """A copy with some fields changed, e.g. {"stop": {"max_lines": 2}} (golden cases, user settings)."""
        changes = {}
        for name, values in delta.items():
            if name not in {f.name for f in dataclasses.fields(self)}:
                raise ValueError(f"unknown post-processing section {name!r}")
            changes[name] = dataclasses.replace(getattr(self, name), **values)
        return dataclasses.replace(self, **changes)


@dataclass
class ModelConfig:
    """Which model to run and how."""

    path: str | None = None  # None: the embedded default model
    # Weight precision (completion/precision.py): auto | float32 | fp16w | bf16 | int8 | q4. "auto" = bf16,
    # plus 4-bit wherever that is lossless (all of the default model, a Q4_1 GGUF): 99.1% top-1 agreement
    # with float32 on real code, ~3x faster decoding (benchmarks/cpu_inference.py).
    dtype: str = "auto"
    threads: int | None = None  # None or <= 0: the cores this process may use, minus one (model.default_threads)


@dataclass
class CacheConfig:
    """How document caches follow edits and how much memory they may hold."""

    mode: str = "pie"  # pie | exact | full
    stale_threshold: int = 16384  # stale tokens, summed over edits, before an exact re-encode
    context_tokens: int = 4096  # window of a document the model sees (capped by the model's context)
    window_step: int = 256
    memory_budget_mb: int = 2048  # all documents' KV together; least recently used evicted


@dataclass
class SuperposedConfig:
    """Superposed decoding (Shen et al., 2024): k drafts from one pass, kept apart by the n-gram model."""

    top_m: int = 8  # LM tokens per draft considered at each step
    branch_ratio: float = 0.1  # a draft branches off only if within this probability ratio of the best
    ngram_weight: float = 0.25  # lambda in P = (1 - lambda) P_LM + lambda P_ngram(. | draft's own tokens)
    temperature: float = 1.0  # of the LM distribution the candidates are scored with
    weight_temperature: float = 0.5  # input weights = softmax(draft scores / this); < 1 favours the leader
    ngram_by_share: bool = True  # n-gram weight per draft = ngram_weight * (1 - the draft's input weight)
    spare: int = 0  # extra drafts handed to verification and ranking, so k survive cuts and merges
    ngram_order: int = 4  # context of the n-gram term = the draft's last order-1 tokens (<= the index's order)
    exact_lead: bool = True  # feed the greedy draft exactly beside the superposed input (2 tokens per step)
    patience: float | None = 0.0  # exact lead: steps the others get after it ended, as a share of its steps
    # what the superposed input sees at each earlier depth: the lead's path ("lead"), its own chain ("own"),
    # the lead's path up to the first branch then its own chain ("branch"), or per depth whichever the
    # drafts holding most of its weight were on there ("vote")
    alt_history: str = "vote"


@dataclass
class VerifyConfig:
    """Exact re-scoring of the drafts in one tree-masked forward, and where to cut them."""

    enabled: bool = True
    cut_confidence: float = 0.8  # cut where the model's own greedy token has at least this probability
    cut_margin: float = 2.0  # ... and beats the draft's token by at least this many nats
    # finish drafts greedily from their exact prefixes: "best" (the best one, if cut) | "all" (every cut or
    # unfinished one) | "off"; at most repair_tokens new tokens each. One token costs no forward (the
    # verification forward already gave the distribution there); each more, one forward. Measured
    # (benchmarks/multidraft.py --samples 200 --files 10, seed 0, alone on the machine): 1 token costs
    # 1.41x greedy (median 1.48x), 2 cost 1.45x (1.51x), best-of-4 exact match 15.0% with either.
    repair: str = "all"
    repair_tokens: int = 1


@dataclass
class DecodingConfig:
    """How drafts are decoded."""

    max_tokens: int = 32
    drafts: int = 1
    strategy: str | None = None  # None: greedy for one draft, else `multi_strategy`
    # The measured default for k > 1 (benchmarks/multidraft.py --samples 200 --files 10, k=4, 1 thread, CPU
    # time; seeds 0-5 pooled, 1200 cursors): beam (patience 1.0) costs 1.29x one greedy draft, its 4 drafts
    # find 1.59x the lines greedy finds, its top draft 117 lines vs greedy's 111. superposed + verify costs
    # 1.43x, finds 1.42x, top draft 113 (its first draft is the greedy line): beam covers more for less.
    multi_strategy: str = "beam"
    multiline: bool = False  # False: stop at the end of the current line
    # Beam search: steps allowed after the first beam ended, as a share of its steps (None: until k ended).
    # Measured as above: 0.5 costs 1.17x but its top draft falls below greedy (shorter lines win); 1.0 does
    # not; None (wait for k ended beams) costs 1.86x.
    beam_patience: float | None = 1.0
    sample_temperature: float = 0.8  # drafts 2..k of strategy greedy are sampled at this temperature
    ngram_debounce_s: float = 2.0  # an open document is re-fed to the n-gram index at most this often
    superposed: SuperposedConfig = field(default_factory=SuperposedConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)

    def strategy_for(self, drafts: int, strategy: str | None = None) -> str:
        """The strategy a request runs: the explicit one, else greedy for one draft or the k-draft default."""
        name = strategy or self.strategy or ("greedy" if drafts <= 1 else self.multi_strategy)
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy '{name}' (expected one of {', '.join(STRATEGIES)})")
        return name


@dataclass
class MonitorConfig:
    """Monitor-guided decoding (Agrawal et al., 2023): jedi keeps identifiers after `obj.` and in imports valid."""

    enabled: bool = True
    jedi_budget_ms: float = 150.0  # per jedi question; past it the draft goes on unconstrained
    dereference: bool = True  # `expr.` -> expr's attributes
    imports: bool = True  # `import a.`, `from a import ` -> modules and members
    # a call's parameter names: only a hint (never a mask, positional arguments are as valid), so off by
    # default: each argument start would cost a jedi call (up to the budget) during decoding for nothing
    keyword_arguments: bool = False
    names_in_scope: bool = False  # names after `=`/`return` must exist (off: jedi cannot see draft-bound names)
    # greedy decoding: a beam of this width over each constrained identifier picks the whole name with
    # the best log-prob instead of its best first token (0 or 1: token by token)
    lookahead_width: int = 6
    used_name_prior: float = 0.0  # lookahead: log-prob bonus for a name the document used after a dot before


@dataclass
class EngineConfig:
    """Everything the `Engine` needs."""

    workspace: str | None = None  # project root for static analysis and the n-gram index
    model: ModelConfig = field(default_factory=ModelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    ngram: NgramConfig = field(default_factory=NgramConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    monitors: MonitorConfig = field(default_factory=MonitorConfig)
