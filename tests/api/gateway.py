"""The gateway harness for the HTTP tests: the app served by uvicorn on a loopback port (real
Valkey and SeaweedFS from the session fixtures), and small helpers to submit and inspect."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

import httpx
import uvicorn

from api.main import create_app
from idbody.stack.polling import until
from idbody.stack.servers import free_port
from shared.queues import GPU_QUEUE
from tests import image_samples as samples

SEED_FIELDS = {
    "body_type": "athletic", "height_cm": "170", "weight_kg": "65", "gender": "female",
    "num_images": "4", "use_gemini_analysis": "true",
}
SUBMIT = "/api/v1/generate-identity-body"


@dataclass
class Gateway:
    app: object
    client: httpx.Client
    base_url: str

    @property
    def store(self):
        return self.app.state.store

    @property
    def storage(self):
        return self.app.state.storage


def serve(settings):
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    def started() -> bool:
        assert thread.is_alive(), "gateway thread died"
        return server.started

    until(started, 20, "the gateway to start", interval_s=0.01)
    return app, server, thread


def submit(gw: Gateway, image: bytes | None = None, name: str = "user_photo.jpg", fields=None, headers=None):
    files = {"face_image": (name, samples.photo() if image is None else image, "image/jpeg")}
    return gw.client.post(SUBMIT, data=SEED_FIELDS if fields is None else fields, files=files, headers=headers)


def queued_messages(redis_client) -> list[dict]:
    return [json.loads(m) for m in redis_client.lrange(GPU_QUEUE, 0, -1)]


def nothing_stored(gw: Gateway, redis_client) -> None:
    assert list(redis_client.scan_iter("job:*")) == []
    assert redis_client.llen(GPU_QUEUE) == 0
    listed = gw.storage.client.list_objects_v2(Bucket=gw.storage.uploads_bucket)
    assert listed.get("KeyCount", 0) == 0
