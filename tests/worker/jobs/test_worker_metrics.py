import httpx
import pytest

from shared.celery_app import make_celery
from worker.metrics import WorkerMetrics
from worker.webhooks.schedule import Outcome


def _sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_worker_metrics_served_over_http(settings, redis_client):
    app = make_celery(settings)
    for _ in range(3):
        app.send_task("identity_body.generate", args=["r"], queue="gpu")
    metrics = WorkerMetrics(redis_client)
    port = metrics.serve(0)
    with metrics.generation():
        metrics.step_done()
        metrics.step_done()
        metrics.step_done()
    metrics.webhook_outcome(Outcome.RETRY)
    metrics.webhook_outcome(Outcome.DELIVERED)
    metrics.webhook_outcome(Outcome.RETRY)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert _sample(text, 'idbody_queue_depth{queue="gpu"}') == 3.0
    assert _sample(text, 'idbody_queue_depth{queue="io"}') == 0.0
    assert _sample(text, "idbody_step_seconds_count") == 3.0  # the first from the start of generation
    assert _sample(text, "idbody_generation_seconds_count") == 1.0
    assert _sample(text, "idbody_jobs_running") == 0.0
    assert _sample(text, 'idbody_webhook_attempts_total{outcome="retry"}') == 2.0
    assert _sample(text, 'idbody_webhook_attempts_total{outcome="delivered"}') == 1.0
    assert "idbody_gpu_memory_bytes" not in text  # no CUDA here


def test_identity_scores_are_a_histogram_and_missing_faces_a_count():
    metrics = WorkerMetrics()
    port = metrics.serve(0)
    for score in (0.95, 0.87, None, 0.05):
        metrics.identity_scored(score)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert _sample(text, "idbody_identity_score_count") == 3.0
    assert _sample(text, "idbody_identity_score_sum") == pytest.approx(1.87)
    # the judge's strangers (~0.85) and likenesses land in different buckets
    assert _sample(text, 'idbody_identity_score_bucket{le="0.88"}') == 2.0
    assert _sample(text, 'idbody_identity_score_bucket{le="0.96"}') == 3.0
    assert _sample(text, 'idbody_identity_score_bucket{le="0.2"}') == 1.0
    assert _sample(text, "idbody_output_faces_missing_total") == 1.0
