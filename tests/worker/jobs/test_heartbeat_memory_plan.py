"""A gpu worker's heartbeat carries the memory plan its engine runs under, on a real Valkey."""

from __future__ import annotations

from shared.jobs.store import JobStore
from shared.settings import Settings
from worker.identity_pipeline import IdentityPipeline
from worker.jobs.heartbeat import Heartbeat, worker_info


def test_the_heartbeat_publishes_the_engines_memory_plan(redis_client, tiny_model_dir):
    settings = Settings(_env_file=None, device="cpu", onnx_providers=["CPUExecutionProvider"], model_profile="tiny",
                        tiny_model_dir=tiny_model_dir, max_batch_images=3)
    pipeline = IdentityPipeline(settings)
    assert worker_info(pipeline)["memory_plan"] is None          # nothing loaded yet
    pipeline.load_models()
    store = JobStore(redis_client, retention_s=3600)
    beat = Heartbeat(store, "gpu0@plan-test", worker_info(pipeline), ttl_s=30).start()
    try:
        (worker,) = [w for w in store.live_workers() if w["worker_id"] == "gpu0@plan-test"]
    finally:
        beat.stop()
    assert worker["pipeline_loaded"] is True and worker["profile"] == "tiny"
    assert worker["memory_plan"] == pipeline.engine.memory_plan.report()
    assert (worker["memory_plan"]["name"], worker["memory_plan"]["rows_per_pass"]) == ("cpu", 3)
