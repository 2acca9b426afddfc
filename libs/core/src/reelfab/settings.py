"""Settings from the environment (prefix ``REELFAB_``), one object shared by every service."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REELFAB_", env_file=None, extra="ignore")

    # where the local stack keeps its data, caches and pid files (git ignores it)
    state_dir: Path = Field(default_factory=lambda: Path.cwd() / ".reelfab")

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_controller_port: int = 9093
    kafka_version: str = "4.1.1"
    kafka_heap: str = "512m"
    schema_registry_url: str | None = None  # set: Confluent wire format; unset: Avro single-object
    max_message_bytes: int = 1_000_000
    consumer_session_timeout_ms: int = 10_000
    consumer_heartbeat_interval_ms: int = 1_000
    consumer_fetch_max_wait_ms: int = 100
    consumer_commit_interval_ms: int = 100  # settled offsets are committed this often (and on revoke/stop)
    consumer_lag_interval_s: float = 15.0  # reelfab_consumer_lag_messages measured this often (0: never)

    # PostgreSQL
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5433
    postgres_db: str = "reelfab"
    postgres_user: str = "postgres"
    postgres_password: str = ""
    postgres_pool_min: int = 1
    postgres_pool_max: int = 5

    # delivery
    retry_max_attempts: int = 5
    retry_backoff_initial_s: float = 0.2
    retry_backoff_max_s: float = 5.0
    # a dependency's outage is waited out (not counted towards the DLQ) with this capped backoff
    outage_backoff_initial_s: float = 0.5
    outage_backoff_max_s: float = 10.0
    health_probe_interval_s: float = 5.0  # PostgreSQL and Kafka asked this often (reelfab_dependency_up)
    outbox_poll_interval_s: float = 0.2
    outbox_batch_size: int = 100

    # storage
    # unset: <state_dir>/objects, so one REELFAB_STATE_DIR moves everything a stack keeps
    storage_root: str = Field(default_factory=lambda data: (Path(data["state_dir"]).resolve() / "objects").as_uri())

    # face engine
    face_backend: str = "classical"  # classical | onnx | facefusion
    models_dir: Path | None = None  # onnx model files; default <state_dir>/models
    commercial_mode: bool = False  # True: refuse every model whose licence forbids commercial use (jobs marked commercial always do)
    execution_providers: str = ""  # comma-separated onnxruntime providers; empty: best available
    facefusion_home: Path | None = None  # an installed FaceFusion (folder holding facefusion.py)
    facefusion_python: str = "python3"
    # a swap whose face went into fewer of the clip's frames fails (swap_quality) instead of shipping
    swap_min_swapped_share: float = Field(default=0.8, ge=0.0, le=1.0)
    # templates' face tracks kept in memory (tracked once per template, reused by every job on it)
    swap_track_cache_mb: int = Field(default=512, ge=0)
    # the swapper's memory for frames in flight (GPU memory on a GPU, RAM on CPU): its run slots are the
    # jobs that fit (swapper domain.per_job_bytes)
    swapper_memory_bytes: int = Field(default=4 * 2**30, gt=0)
    # fused mode (small deployments): the swapper renders to the platform spec as it swaps (no lossless
    # mezzanine between the services); the post-producer then checks the spec, signs and stores
    fused_render: bool = False

    # consent
    consent_master_key: str | None = None  # base64 of 32 bytes; unset: a key file under state_dir (dev)
    consent_asset_kind: str = "photo"  # photo | synthetic: which identity threshold enrolment uses
    consent_phash_threshold: int = 8  # bits of 64 a re-encoded copy of an enrolled image may differ by
    consent_max_upload_bytes: int = 10 * 1024 * 1024
    # unset (None): the registry's own defaults (services/consent_registry/config.py RegistryConfig)
    consent_max_face_pixels: int | None = None  # a larger face image is refused from its header
    consent_face_work_pixels: int | None = None  # larger images are decoded reduced to about this size
    consent_face_concurrency: int | None = None  # face decodes/embeddings at once
    consent_checkpoint_interval_s: float | None = None  # signed audit checkpoint at least this often
    consent_checkpoint_every: int | None = None  # ... and after this many new audit entries
    consent_consumer_group: str | None = None  # a registry on a database of its own must not share the group
    consent_public_keys: str = ""  # for other services: "keyid=base64,..." of the registry's public keys
    consent_registry_url: str = "http://127.0.0.1:8081"
    consent_token: str = ""  # a reader token of the registry's API, for checks from other processes

    # post-production
    c2pa_cert_chain: Path | None = None  # PEM, leaf then CA; unset: a local test CA under state_dir (dev)
    c2pa_private_key: Path | None = None
    c2pa_trust_anchor: Path | None = None
    render_reframe: str = "face"  # face | blur | pad, for templates that are not 9:16
    render_label_position: str = "top-left"
    render_loudness_lufs: float = -14.0

    # planner (services/planner): catalogue QC, batches, triggers, model choice
    planner_template_min_s: float = Field(default=15.0, gt=0)  # a template clip shorter than this is refused
    planner_template_max_s: float = Field(default=30.0, gt=0)
    planner_template_min_short_side: int = Field(default=540, ge=1)  # pixels, the clip's shorter side
    planner_template_min_face_share: float = Field(default=0.8, ge=0.0, le=1.0)  # of sampled frames with a face
    planner_template_qc_samples: int = Field(default=15, ge=1, le=500)  # frames the template QC looks at
    planner_caption_styles: Path | None = None  # a TOML file of caption styles; unset: the built-in ones
    planner_platform: str = "tiktok"  # what planned jobs are for
    planner_subjects: str = ""  # comma-separated subject ids: plan only these (a pilot, `reelfab demo`); empty: all
    planner_max_share: float = Field(default=0.25, gt=0.0, le=1.0)  # of a batch, per subject and per template
    planner_schedule_every_s: float = Field(default=0.0, ge=0.0)  # 0: no scheduled batches
    planner_schedule_count: int = Field(default=10, ge=1)  # jobs per scheduled batch
    planner_trend_priority: int = Field(default=10, ge=1)  # a trend's jobs travel expedited at this priority
    planner_trend_max_jobs: int = Field(default=20, ge=1)  # per trend, unless the trend asks for fewer
    # "shot:model,model;shot:model": the first model of the template's shot whose licence fits the job
    planner_model_rules: str = "close-up:hyperswap_1a_256,ghost_2_256;wide:inswapper_128,ghost_1_256"
    planner_closeup_face_share: float = Field(default=0.2, gt=0.0, le=1.0)  # face height / frame height

    # analytics (services/analytics): rewards, posteriors, rules
    analytics_reward: str = "auto"  # auto (completion rate where reported, else interactions) | completion | interactions
    analytics_prior_alpha: float = Field(default=1.0, gt=0.0)
    analytics_prior_beta: float = Field(default=1.0, gt=0.0)
    # a post counts as this many Bernoulli trials at its observed rate (capped by its views): more than
    # one view's evidence, bounded so that one viral post cannot swamp an arm (posts vary more than views)
    analytics_post_weight: float = Field(default=20.0, ge=1.0)
    analytics_policy_flush_s: float = Field(default=1.0, gt=0.0)  # changed posteriors are published this often
    analytics_strike_reasons: str = "spam_risk,moderation_rejected,content_violation"  # job.failed reason codes
    analytics_strike_limit: int = Field(default=3, ge=1)  # strikes within the window disable the subject
    analytics_strike_window_s: float = Field(default=7 * 86400.0, gt=0.0)
    analytics_elimination_mean: float = Field(default=0.02, ge=0.0, le=1.0)  # a template's posterior mean under this ...
    analytics_elimination_min_posts: int = Field(default=20, ge=1)  # ... after this many posts: elimination candidate
    analytics_max_count: int = Field(default=10**12, ge=1)  # engagement counters above this are refused as absurd
    analytics_max_interactions_per_view: float = Field(default=1.0, gt=0.0)  # likes/comments/shares above this × views × 1.05 + 10 (counting-lag slack): absurd
    analytics_max_clock_skew_s: float = Field(default=300.0, ge=0.0)  # an engagement reading observed further ahead of the clock than this is refused

    # publisher (services/publisher): TikTok Content Posting API, the review queue, read-back
    tiktok_api_url: str = "https://open.tiktokapis.com"
    tiktok_client_key: str = ""
    tiktok_client_secret: str = ""
    # base64 of 32 bytes (a Fernet key) that encrypts the accounts' OAuth tokens at rest; unset: a key
    # file under state_dir (development)
    publisher_token_key: str | None = None
    publisher_review_secret: str | None = None  # signs the review page's sessions; unset: a key file (dev)
    publisher_dryrun_dir: Path | None = None  # where dry-run posts go; default <state_dir>/dryrun-posts
    publisher_simulator_seed: int = 7  # the dry-run engagement simulator's
    publisher_simulator_views_per_hour: float = Field(default=400.0, ge=0.0)  # a dry-run post's launch speed
    # pinned true rates, "subject:ada=0.3,template:t1=1.5" (a subject's base rate, a template's factor)
    publisher_simulator_rates: str = ""
    publisher_refresh_margin_s: float = Field(default=600.0, ge=0.0)  # refresh an access token expiring this soon
    publisher_tick_s: float = Field(default=1.0, gt=0.0)  # how often the poster looks for work
    # a job a worker moves is its own this long, renewed while it works: a killed worker's job is taken
    # over by another after at most this
    publisher_claim_lease_s: float = Field(default=60.0, ge=1.0)
    # a post's processing status is fetched this often (TikTok allows 30 fetches a minute per account)
    publisher_status_poll_s: float = Field(default=10.0, gt=0.0)
    publisher_status_timeout_s: float = Field(default=6 * 3600.0, gt=0.0)  # still processing after this: failed
    publisher_inbox_poll_s: float = Field(default=900.0, gt=0.0)  # an inbox draft's status, this often
    publisher_inbox_timeout_s: float = Field(default=7 * 86400.0, gt=0.0)  # a draft not posted by then: given up
    publisher_upload_url_ttl_s: float = Field(default=3600.0, gt=0.0)  # TikTok's upload URLs last an hour
    publisher_chunk_mb: int = Field(default=10, ge=5, le=64)  # preferred upload chunk, MB (5-64 by the rules)
    publisher_spam_pause_s: float = Field(default=24 * 3600.0, gt=0.0)  # an account warned of spam risk rests
    publisher_retry_max_s: float = Field(default=600.0, gt=0.0)  # the longest wait between attempts of a post
    publisher_max_attempts: int = Field(default=8, ge=1)  # a post that keeps failing for reasons of its own
    publisher_readback_first_s: float = Field(default=300.0, gt=0.0)  # a new post's engagement, read this soon
    publisher_readback_max_s: float = Field(default=86400.0, gt=0.0)
    publisher_readback_horizon_s: float = Field(default=30 * 86400.0, gt=0.0)  # older posts are not read again

    # service process
    http_host: str = "127.0.0.1"
    http_port: int = 0  # 0: the service's default port
    log_format: str = "json"  # json | pretty
    log_level: str = "INFO"

    @property
    def broker_max_message_bytes(self) -> int:
        """What the broker and clients accept: the project's limit plus room for DLQ headers."""
        return self.max_message_bytes + 64 * 1024

    @property
    def postgres_dsn(self) -> str:
        """The DSN, user and password percent-encoded (a generated password's '/', '@' or '#' would
        otherwise end the user-info part early)."""
        from urllib.parse import quote

        auth = quote(self.postgres_user, safe="") + (
            f":{quote(self.postgres_password, safe='')}" if self.postgres_password else "")
        return f"postgresql://{auth}@{self.postgres_host}:{self.postgres_port}/{self.postgres_db}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
