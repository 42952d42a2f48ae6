"""The one configuration tree: every setting of the engine, the CLI and the language server, typed once.

Each component receives only its slice (`ModelConfig`, `CacheConfig`, `DecodingConfig` and its
`SuperposedConfig` / `VerifyConfig`, `NgramConfig`, `PostprocessConfig`, `MonitorConfig`); the
language server also reads `CompletionConfig`, `WatcherConfig` and `log_level`. A default is written
here and nowhere else: the CLI's flags (`lsp/cli.py`) and the server's camelCase options
(`lsp/options.py`) are read off these fields, and a test holds the editors' settings and the docs
to them. Every slice checks its fields against its type hints (`fields.Checked`): a mode that is not
one of its `Literal` choices, a wrong type or a number out of its `Range` is a ValueError.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal, get_args

from superpie.analysis.defaults import JEDI_BUDGET_MS, WATCHER_DEBOUNCE_MS
from superpie.analysis.workspace_files import IGNORED_DIRS, MAX_SOURCE_BYTES
from superpie.cache.defaults import OPEN_CHUNK, OPEN_WINDOW, STALE_THRESHOLD, WINDOW_STEP
from superpie.completion.config.fields import Checked, Range

# Modes. Where a lower layer keeps its own tuple (cache.document.MODES, model.precision.PRECISIONS), a
# test holds it equal to these.
CacheMode = Literal["pie", "exact", "full"]
DType = Literal["auto", "float32", "fp16w", "int8dyn", "bf16", "int8", "q4"]
Strategy = Literal["greedy", "superposed", "beam"]
Repair = Literal["best", "all", "off"]
LogLevel = Literal["error", "warning", "info", "debug"]
# Models known by name (completion/model/catalog.py, which a test holds to this); `model.path` takes one of
# these or a local directory.
ModelName = Literal["smollm2-135m", "qwen2.5-coder-0.5b"]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
Layout = Literal["auto", "prefix", "fim"]  # how a document is cached: its text, or the FIM layout at the cursor
BackendKind = Literal["local", "remote"]
RemoteApi = Literal["auto", "llama.cpp", "openai"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)

# Bounds.
Positive = Annotated[int, Range(low=1)]
NonNegative = Annotated[int, Range(low=0)]
NonNegativeFloat = Annotated[float, Range(low=0)]
Share = Annotated[float, Range(low=0, high=1)]


@dataclass(frozen=True)
class NgramConfig(Checked):
    """The n-gram index's slice of the configuration."""

    order: Positive = 4
    max_ngrams: Positive = 500_000  # distinct n-grams of order >= 2
    max_files: Positive = 5_000
    max_file_bytes: Positive = MAX_SOURCE_BYTES
    ignored_dirs: frozenset[str] = IGNORED_DIRS
    persist: bool = True


@dataclass(frozen=True)
class StopConfig(Checked):
    """Where drafts end."""

    max_lines: Positive = 16  # multi-line drafts are cut after this many lines


@dataclass(frozen=True)
class SuffixConfig(Checked):
    """Dropping drafts that repeat the text after the cursor."""

    enabled: bool = True
    compare_lines: NonNegative = 3  # upcoming non-blank lines a draft is compared with


@dataclass(frozen=True)
class BracketConfig(Checked):
    """Cutting drafts that close brackets nobody opened."""

    enabled: bool = True


@dataclass(frozen=True)
class IndentConfig(Checked):
    """Re-indenting drafts to the document's style."""

    enabled: bool = True


@dataclass(frozen=True)
class RankConfig(Checked):
    """Weights of the rank score (see `rank`)."""

    length_alpha: float = 1.0  # 1: mean log-prob per token; 0: total log-prob
    syntax_penalty: float = 2.0  # per syntax error the draft adds, up to max_syntax_errors (0: no parse)
    # errors counted per draft: past the first, the count is tree-sitter's recovery, not the draft (two
    # drafts that open the same unterminated docstring differ by what the string swallows), so 1
    max_syntax_errors: NonNegative = 1
    monitor_penalty: float = 2.0  # times (1 - monitor_score)
    # added to the greedy draft's score: on the multi-draft benchmark a draft whose mean log-prob beats the
    # greedy line's was no likelier to be the real line, so alternatives come after the greedy line unless
    # it adds syntax errors or fails a monitor
    greedy_bonus: float = 1.0


@dataclass(frozen=True)
class PostprocessConfig(Checked):
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
class ModelConfig(Checked):
    """Which model to run and how."""

    path: str | None = None  # a model name (MODEL_NAMES) or a local HF directory; None: the embedded default model
    # Weight precision (completion/model/precision.py). "auto" picks by CPU: bf16 prefill plus the GGUF's own
    # 4-bit weights for decoding where the CPU has bf16 matrix units, fp16 weights with fp32 activations where
    # it has not (figures: benchmarks/RESULTS.md, cpu_inference).
    dtype: DType = "auto"
    # None: follow the machine's load, every core this process may use that the other processes leave idle
    # (completion/model/threads.py); the deterministic front doors fix it (model.default_threads)
    threads: Positive | None = None
    # auto: the layout that measured best for a named model (completion/model/catalog.py), prefix for a path;
    # fim needs fill-in-the-middle tokens in the tokenizer (completion/model/fim.py)
    layout: Layout = "auto"
    # "local": decode in this process over the PIE cache; "remote": a serving engine over HTTP (completion/backend/)
    backend: BackendKind = "local"
    url: str | None = None  # remote: the engine's base URL, e.g. http://127.0.0.1:8080
    name: str | None = None  # remote: the model the engine serves (None: the one it lists first)
    api: RemoteApi = "auto"  # remote: which HTTP API; auto: llama.cpp if /props answers, else /v1/models
    # remote: the NAME of the environment variable holding the API key (the key never sits in a settings file)
    api_key_env: str = "SUPERPIE_API_KEY"
    connect_timeout_ms: Positive = 1000
    read_timeout_ms: Positive = 10000  # remote: one request's answer, from the moment it was sent
    retries: NonNegative = 1  # remote: a request that could not be sent (refused, reset, 503) is tried again
    fallback: bool = False  # remote: the engine down or failing, complete with the local model (`path`)
    prompt_chars: Positive = 6000  # remote: text before the cursor sent as the prompt (moves in quarter steps)
    suffix_chars: NonNegative = 1500  # remote: text after the cursor sent where the API takes a suffix (infill)
    # remote: extra requests per completion to re-spell a monitored identifier the engine got wrong (two each:
    # the name under a grammar or regex, then the rest); past them the draft is cut before the name
    monitor_requests: NonNegative = 6


@dataclass
class CacheConfig(Checked):
    """How document caches follow edits and how much memory they may hold."""

    mode: CacheMode = "pie"
    stale_threshold: Positive = STALE_THRESHOLD  # stale tokens, summed over edits, before an exact re-encode
    context_tokens: Positive = 4096  # window of a document the model sees (capped by the model's context)
    window_step: Positive = WINDOW_STEP
    fim_suffix_tokens: Positive = 512  # FIM layout: tokens after the cursor the model sees (the rest is prefix)
    memory_budget_mb: Positive = 2048  # all documents' KV together; least recently used evicted
    # server: re-encode stale tokens exactly after this long without work, `open_chunk` tokens per idle step
    idle_refresh_ms: NonNegative = 1500
    # server: a newly opened document of more tokens than this is encoded window-first: this many tokens before
    # the cursor when a request comes, the rest `open_chunk` tokens per idle step, then exact (cache/opening.py);
    # 0: the whole document at once
    open_window: NonNegative = OPEN_WINDOW
    open_chunk: Positive = OPEN_CHUNK
    # greedy decoding over stale KV (PIE behind an edit, a cursor jump in the FIM layout) trusts it while its
    # choices are clear; a choice closer than this many nats re-encodes the stale tokens the cursor reads
    # exactly and decodes again (completion/engine.py; figures: benchmarks/RESULTS.md, fim_pie). 0: never
    close_call_margin: NonNegativeFloat = 1.0
    close_call_tokens: NonNegative = 1024  # ... when at most this many tokens are stale (more: PIE as it stands)
    # server: a longer document (thousands of characters) is completed through a window around the cursor,
    # never tokenized or indexed whole (lsp/documents.py)
    max_document_kb: Positive = 1024


@dataclass
class SuperposedConfig(Checked):
    """Superposed decoding (Shen et al., 2024): k drafts from one pass, kept apart by the n-gram model."""

    top_m: Positive = 8  # LM tokens per draft considered at each step
    branch_ratio: Share = 0.1  # a draft branches off only if within this probability ratio of the best
    ngram_weight: Share = 0.25  # lambda in P = (1 - lambda) P_LM + lambda P_ngram(. | draft's own tokens)
    temperature: float = 1.0  # of the LM distribution the candidates are scored with
    weight_temperature: float = 0.5  # input weights = softmax(draft scores / this); < 1 favours the leader
    ngram_by_share: bool = True  # n-gram weight per draft = ngram_weight * (1 - the draft's input weight)
    spare: NonNegative = 0  # extra drafts handed to verification and ranking, so k survive cuts and merges
    ngram_order: Positive = 4  # context of the n-gram term = the draft's last order-1 tokens (<= the index's order)
    exact_lead: bool = True  # feed the greedy draft exactly beside the superposed input (2 tokens per step)
    patience: float | None = 0.0  # exact lead: steps the others get after it ended, as a share of its steps


@dataclass
class VerifyConfig(Checked):
    """Exact re-scoring of the drafts in one tree-masked forward, and where to cut them."""

    enabled: bool = True
    cut_confidence: Share = 0.8  # cut where the model's own greedy token has at least this probability
    cut_margin: float = 2.0  # ... and beats the draft's token by at least this many nats
    # finish drafts greedily from their exact prefixes: "best" (the best one, if cut) | "all" (every cut or
    # unfinished one) | "off"; at most repair_tokens new tokens each. One token costs no forward (the
    # verification forward already gave the distribution there); each more, one forward (benchmarks/RESULTS.md,
    # multidraft: one token costs less than two and finds as many lines).
    repair: Repair = "all"
    repair_tokens: NonNegative = 1


@dataclass
class DecodingConfig(Checked):
    """How drafts are decoded."""

    max_tokens: Positive = 32
    # The default for k > 1: on the multidraft benchmark beam covered more lines than superposed + verify for
    # less decode time (benchmarks/RESULTS.md, multidraft).
    multi_strategy: Strategy = "beam"
    multiline: bool = False  # False: stop at the end of the current line
    # Beam search: steps allowed after the first beam ended, as a share of its steps (None: until k ended).
    # 1.0: as many lines as waiting for k ended beams, for much less; 0.5 puts shorter lines above greedy's
    # (benchmarks/RESULTS.md, multidraft: patience).
    beam_patience: float | None = 1.0
    # True: beam search keeps the greedy line as one beam until it ends and marks its draft greedy for ranking
    # (the top draft is then greedy's line); off: not measured on held-out sites (benchmarks/RESULTS.md, multidraft).
    beam_keep_greedy: bool = False
    sample_temperature: float = 0.8  # drafts 2..k of strategy greedy are sampled at this temperature
    # greedy drafts verify tokens proposed from the document, the workspace and recycled candidates several per
    # forward, with plain greedy decoding's output (decoding/speculative.py). On: the keystroke p50 measured
    # 1.18-1.23x lower with it for both named models on a quiet AVX2 machine, 1.12-1.23x on one with AMX
    # (benchmarks/RESULTS.md, keystrokes). Where decoding rounds activations to bf16 (`auto` on a CPU with bf16 units)
    # only chains whose rows are computed exactly as one-row steps; not used with int8dyn (`LoadedModel.speculates`).
    speculate: bool = True
    ngram_debounce_s: NonNegativeFloat = 2.0  # an open document is re-fed to the n-gram index at most this often
    superposed: SuperposedConfig = field(default_factory=SuperposedConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)

    def strategy_for(self, drafts: int, strategy: str | None = None) -> str:
        """The strategy a request runs: the explicit one, else greedy for one draft or the k-draft default."""
        name = strategy or ("greedy" if drafts <= 1 else self.multi_strategy)
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy '{name}' (expected one of {', '.join(STRATEGIES)})")
        return name


@dataclass
class MonitorConfig(Checked):
    """Monitor-guided decoding (Agrawal et al., 2023): jedi keeps identifiers after `obj.` and in imports valid."""

    enabled: bool = True
    jedi_budget_ms: NonNegativeFloat = JEDI_BUDGET_MS  # per jedi question; past it the draft goes on unconstrained
    dereference: bool = True  # `expr.` -> expr's attributes
    imports: bool = True  # `import a.`, `from a import ` -> modules and members
    # a call's parameter names: only a hint (never a mask, positional arguments are as valid), so off by
    # default: each argument start would cost a jedi call (up to the budget) during decoding for nothing
    keyword_arguments: bool = False
    names_in_scope: bool = False  # names after `=`/`return` must exist (off: jedi cannot see draft-bound names)
    # greedy decoding: a beam of this width over each constrained identifier picks the whole name with
    # the best log-prob instead of its best first token (0 or 1: token by token)
    lookahead_width: NonNegative = 6
    used_name_prior: float = 0.0  # lookahead: log-prob bonus for a name the document used after a dot before


@dataclass
class ContextConfig(Checked):
    """Repository context (completion/context/): snippets of other workspace files ahead of the document in
    its cache: the definitions of the names used near the cursor (jedi, within `monitors.jedi_budget_ms`),
    recently edited and visited regions, in the model's repository format."""

    enabled: bool = False
    tokens: Positive = 1024  # the context's budget, repository and file headers included


@dataclass
class CompletionConfig(Checked):
    """What a completion asks for when its request does not say: how many drafts and how they are
    decoded (every front door), and per kind of the language server's requests, ghost text (inline)
    and the suggest menu, how long a draft may be and whether it may span lines."""

    drafts: Positive = 1
    strategy: Strategy | None = None  # None: greedy for one draft, else `decoding.multi_strategy`
    max_tokens_inline: Positive = 16
    max_tokens_menu: Positive = 48
    inline_multiline: bool = False
    menu_multiline: bool = True
    ready_timeout_ms: NonNegative = 2000  # how long a request waits for the model to load before answering empty
    # typing along the shown suggestion is answered with the rest of it, not decoded again (completion/carry.py);
    # a fresh decode gave the same rest at 189 of 191 held-out sites (benchmarks/RESULTS.md, carry)
    carry: bool = True


@dataclass
class WatcherConfig(Checked):
    """The language server's workspace watcher, which keeps the n-gram index current."""

    enabled: bool = True
    max_file_kb: Positive = MAX_SOURCE_BYTES // 1000  # larger files are ignored
    debounce_ms: Positive = WATCHER_DEBOUNCE_MS  # file-system events of one path are coalesced for this long


@dataclass
class EngineConfig(Checked):
    """The whole tree: everything the `Engine` needs, plus the language server's own sections."""

    workspace: str | None = None  # project root for static analysis and the n-gram index
    model: ModelConfig = field(default_factory=ModelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    ngram: NgramConfig = field(default_factory=NgramConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    monitors: MonitorConfig = field(default_factory=MonitorConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    completion: CompletionConfig = field(default_factory=CompletionConfig)
    watcher: WatcherConfig = field(default_factory=WatcherConfig)  # server
    log_level: LogLevel = "info"  # server
