"""One settings object for every process, read from the environment (prefix ``IDBODY_``) and ``.env``.

Example::

    from shared.settings import get_settings
    settings = get_settings()
    settings.redis_url            # IDBODY_REDIS_URL
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "IDBODY_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- queue and job records -------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Valkey/Redis for jobs and the Celery broker.")
    job_retention_s: int = Field(7 * 24 * 3600, ge=60, description="How long job records and result images are kept.")
    upload_retention_s: int = Field(0, ge=0, description="Keep face uploads this long after a job ends (0: delete at once).")
    task_soft_time_limit_s: int = Field(540, ge=1, description="Generation is asked to stop after this long.")
    task_time_limit_s: int = Field(600, ge=1, description="A task is killed after this long.")
    broker_visibility_timeout_s: int = Field(3600, ge=2, description="Unacked tasks are redelivered after this; must exceed task_time_limit_s.")
    worker_heartbeat_ttl_s: int = Field(30, ge=2, description="A worker counts as alive this long after its last heartbeat; a running job whose worker stopped renewing its lease this long is requeued.")
    reaper_interval_s: float = Field(10.0, ge=1, description="How often beat requeues running jobs whose worker's lease expired.")
    transient_retry_window_s: float = Field(900.0, ge=0, description="How long a worker retries a job step while Redis or S3 is unreachable before the job fails with service_unavailable.")
    beat_schedule_path: Path | None = Field(None, description="Celery beat's schedule file; default: one per Redis URL in the temp folder, so stacks on one host never share it.")

    # --- object storage (any S3-compatible endpoint) ----------------------------------
    s3_endpoint_url: str | None = Field("http://127.0.0.1:8333", description="S3 endpoint; empty for AWS itself.")
    s3_region: str = Field("us-east-1", description="S3 region name used for signing.")
    s3_access_key: str = Field("idbody", description="S3 access key id.")
    s3_secret_key: SecretStr = Field(SecretStr("idbody-secret-change-me"), description="S3 secret key.")
    s3_bucket_uploads: str = Field("idbody-uploads", description="Private bucket for face uploads.")
    s3_bucket_results: str = Field("idbody-results", description="Bucket for generated images (private; served by presigned URLs).")
    s3_presign_expiry_s: int = Field(3600, ge=60, le=7 * 24 * 3600, description="Lifetime of presigned result URLs.")
    public_results_base_url: str | None = Field(None, description="If set, result URLs are this base + key (a CDN) instead of presigned.")
    s3_presign_endpoint_url: str | None = Field(None, description="Endpoint that presigned result URLs name, when clients reach S3 at another address than the services do (compose: http://127.0.0.1:8333 while the services use http://s3:8333); default: s3_endpoint_url.")

    # --- gateway -----------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address the gateway binds to.")
    api_port: int = Field(8000, description="Port the gateway listens on.")
    max_streams_per_process: int = Field(2000, ge=1, le=100_000, description="Open job event streams per gateway process; past it a new stream answers 503 streams_full (clients poll the status instead).")
    max_streams_per_key: int = Field(50, ge=1, le=100_000, description="Open job event streams per API key (jobs without a key share one count) in each gateway process; past it 429 too_many_streams.")
    max_connections: int = Field(4096, ge=16, le=1_000_000, description="Open connections per gateway process; past it new requests answer 503 at once.")
    header_timeout_s: float = Field(10.0, gt=0, le=600, description="A request line and its headers must arrive within this long, else the connection is closed.")
    public_api_url: str | None = Field(None, description="Base URL clients reach the gateway at, used in status_url/result_url of responses and webhooks; required when deployment is container. Default: the request's own (webhooks: this machine's loopback).")
    deployment: Literal["local", "container"] = Field("local", description="container: set by the images; the gateway and io workers then refuse to start without public_api_url.")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Larger uploads get 413.")
    max_image_pixels: int = Field(40_000_000, ge=10_000, description="Decompression-bomb cap on width*height of a PNG, WebP, HEIC or AVIF photo.")
    max_jpeg_pixels: int = Field(200_000_000, ge=10_000, description="Cap on width*height of a JPEG photo (decoded at 1/2, 1/4 or 1/8 scale when large, so it may have more pixels than other formats).")
    min_image_side: int = Field(64, ge=16, description="Uploads with a shorter side are refused.")
    max_wait_s: int = Field(60, ge=0, le=600, description="Largest N honoured in 'Prefer: wait=N'.")
    api_workers: int = Field(1, ge=1, le=64, description="Gateway processes started by 'idbody api'.")
    default_width: int | None = Field(None, ge=64, le=2048, multiple_of=8, description="Output width of jobs that do not send one (empty: the engine's full-body size, 832 on SDXL, 104 on the tiny profile); 'idbody up' sets 256 on the tiny profile.")
    default_height: int | None = Field(None, ge=64, le=2048, multiple_of=8, description="Output height of jobs that do not send one (empty: 1216 on SDXL, 152 on the tiny profile); 'idbody up' sets 256 on the tiny profile.")
    max_waiting_requests: int = Field(64, ge=1, le=10_000, description="Most 'Prefer: wait' requests held at once per gateway process; the rest answer 202 at once.")
    cors_origins: list[str] = Field([], description='Browser origins allowed to call the API from another site (CORS), e.g. ["https://app.example.com"]; empty: CORS off.')
    max_decode_bytes: int = Field(32 * 1024 * 1024, ge=1024 * 1024, description="Largest decoded photo kept (width x height x bytes per pixel, read from the header before decoding): a JPEG above it is decoded at 1/2, 1/4 or 1/8 scale, another format decoded whole and then reduced to fit.")
    max_concurrent_decodes: int = Field(4, ge=1, le=64, description="Gateway decode memory per process, in photos of max_decode_bytes: decodes hold their decoded size of max_concurrent_decodes x max_decode_bytes and wait while it is spent; a larger photo (a big PNG) waits to decode alone.")
    body_read_timeout_s: float = Field(60.0, gt=0, le=3600, description="A request body must arrive within this long, or 408 request_timeout.")

    # --- engine ----------------------------------------------------------------------
    model_profile: Literal["auto", "instantid", "tiny"] = Field("auto", description="auto: instantid when the model folder verifies and a GPU exists, else tiny.")
    model_dir: Path = Field(Path("models"), description="Folder the released weights are downloaded into.")
    tiny_model_dir: Path = Field(Path(".cache/tiny-models"), description="Folder the tiny profile is built into.")
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="Torch device for the worker; auto picks cuda when available.")
    onnx_providers: list[str] = Field(["CUDAExecutionProvider", "CPUExecutionProvider"], description="onnxruntime providers, first available wins.")
    min_face_px: int = Field(128, ge=8, description="Faces whose shorter bbox side is smaller get face_too_small.")
    faces_differ_distance: float | None = Field(None, gt=0, le=2, description="A job's face photos (1-5) whose faces lie further apart than this cosine distance (1 - cosine similarity of the recognizer's embeddings, any two photos) are refused with faces_differ. Empty: the recognizer's own default, 0.085 for dlib (tiny profile: dlib's 0.6 Euclidean rule) and 0.75 for antelopev2 (instantid profile).")
    memory_plan: Literal["auto", "resident", "resident-fp8", "model-offload", "group-offload"] = Field("auto", description="Where the networks live on a CUDA card: auto picks from the free VRAM at load (the fastest that fits one image; 'idbody plan --vram-gb N' prints the pick), or name one: resident (all on the GPU), resident-fp8 (IdentityNet and text encoders stored in fp8), model-offload (one network at a time on the GPU), group-offload (layers streamed from the CPU; 4 GB cards). Rows per pass and VAE tiling follow from it; ignored on the CPU.")
    hf_token: SecretStr | None = Field(None, description="Token for model downloads, if your mirror needs one.")
    engine_fast: Literal["auto", "on", "off"] = Field("auto", description="Fast engine (channels-last, fused QKV, LCM-LoRA baked into the weights with no PEFT wrappers, per-image scales, no device sync per step). auto: on with CUDA, off on the CPU.")
    engine_compile: bool = Field(False, description="Fast engine on CUDA: torch.compile UNet, IdentityNet and VAE decoder with CUDA graphs, compiled and recorded at worker start before it reports ready. Whole networks without graph breaks, for static sizes only: the sizes the page offers, the default size and the face-detail size (other sizes run eager, logged), the batch padded to 2, 4, 8... rows. Off by default until a GPU run measures its compile time (the dynamic-shape compile of 2026-11-26 took 6 minutes for IdentityNet alone: bench/README.md).")
    compile_cache_dir: Path | None = Field(None, description="Where torch.compile keeps its caches so a restart does not compile again; default: <model folder>/.compile-cache.")
    max_batch_images: int = Field(8, ge=1, le=64, description="Most images one denoise pass runs when jobs of the same shape are batched together (the compiled engine warms up its CUDA graphs up to this batch).")
    micro_batching: bool = Field(True, description="With the fast engine (CUDA by default): the gpu worker runs up to max_batch_images jobs at once (Celery's threads pool) and their base generations share one denoise pass when their shape (mode, steps, size, guidance) matches. Off, or without the fast engine: one job at a time.")
    batch_window_ms: int = Field(50, ge=0, le=5000, description="Longest the oldest waiting job waits for company of its shape before its denoise pass starts.")
    safety_check: bool = Field(True, description="Run the nudity detector (NudeNet 320n) on every output image; a flagged image is stored as a blurred copy and marked nsfw: true. Off: images carry nsfw: null and results say safety_check: off.")
    safety_threshold: float = Field(0.5, ge=0, le=1, description="An output image is flagged when the detector gives any exposed intimate body part at least this probability (0 flags every image).")

    # --- appearance analysis (Gemini, opt-in) -------------------------------------------
    gemini_api_key: SecretStr | None = Field(None, description="No key: appearance analysis is skipped.")
    gemini_model: str = Field("gemini-2.5-flash", description="Gemini model used for appearance analysis.")
    gemini_base_url: str | None = Field(None, description="Override the Gemini API base URL (tests, proxies).")
    gemini_timeout_s: float = Field(10.0, gt=0, le=120, description="Timeout of one Gemini call.")
    gemini_max_retries: int = Field(2, ge=0, le=5, description="Retries of a failed Gemini call.")
    gemini_max_concurrency: int = Field(2, ge=1, le=32, description="Most Gemini calls in flight per process.")

    # --- auth, webhooks, limits -----------------------------------------------------------
    auth_disabled: bool = Field(False, description="Development only: accept requests without an API key.")
    webhook_allow_hosts: list[str] = Field([], description="Hosts allowed as webhook targets even if private (local development).")
    webhook_timeout_s: float = Field(10.0, gt=0, le=60, description="Timeout of one webhook delivery attempt.")
    webhook_max_attempts: int = Field(8, ge=1, le=20, description="Delivery attempts before a webhook is given up.")
    webhook_max_unconfirmed_attempts: int = Field(2, ge=1, le=20, description="Attempts the receiver got but did not answer within webhook_timeout_s before delivery stops: it may have processed them (receivers dedupe by the webhook-id header).")
    webhook_backoff_base_s: float = Field(10.0, ge=0, le=600, description="First webhook retry waits about this long; each next one twice as long (with jitter).")
    webhook_backoff_cap_s: float = Field(900.0, ge=0, le=3000, description="Longest wait between webhook attempts, Retry-After included; stays below the broker visibility timeout so a waiting retry is not redelivered.")
    webhook_secret: SecretStr | None = Field(None, description="whsec_... secret that signs webhooks of jobs submitted without an API key (auth disabled).")
    default_rate_limit_per_min: int = Field(300, ge=1, description="Requests per minute (submits and status polls alike) for a new API key unless given.")
    default_max_queued_jobs: int = Field(10, ge=1, description="Unfinished jobs a new API key may have at once unless given.")
    idempotency_ttl_s: int = Field(24 * 3600, ge=60, description="How long an Idempotency-Key maps to its job.")
    sweep_interval_s: float = Field(60.0, ge=1, description="How often the io worker's beat runs the retention sweep.")
    worker_metrics_port: int | None = Field(None, ge=0, le=65535, description="Workers serve Prometheus metrics on this port (none: off; 0: any free port).")
    worker_metrics_host: str = Field("127.0.0.1", description="Address the worker metrics port binds to (0.0.0.0 in containers).")

    log_level: str = Field("INFO", description="Logging level: DEBUG, INFO, WARNING or ERROR.")
    log_format: Literal["auto", "json", "text"] = Field("auto", description="json: one JSON object per line (request_id, event, status, worker, timings); text: for a terminal; auto: json when deployment is container.")
    otel_endpoint: str | None = Field(None, description="OTLP/HTTP endpoint (http://collector:4318) to send traces of submit -> task -> webhook to; none: tracing off. Needs the `otel` extra.")


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once. Tests build ``Settings(...)`` directly instead."""
    return Settings()
