"""Object storage on any S3-compatible endpoint (AWS, SeaweedFS, MinIO, R2), via boto3.

Two private buckets: face uploads (biometric data, never public) and result images. Result URLs are
presigned GETs with a configured lifetime, or ``public_base_url + key`` when a CDN fronts the
results bucket.

Keys::

    uploads: {request_id}/face.jpg      (the checked photo, re-encoded by the gateway: api.upload)
             {request_id}/face_{n}.jpg  (photo n = 2..5 of a job sent several: shared.face_images)
             {request_id}/pose.jpg      (the optional pose photo, checked the same way)
    results: {request_id}/identity_body_{index}.{png|jpg|webp}   (the job's output_format)

Example::

    storage = Storage.from_settings(settings)
    storage.ensure_buckets()
    key = storage.put_result(request_id, 0, png_bytes)
    storage.result_url(key)   # http://127.0.0.1:8333/idbody-results/<id>/identity_body_0.png?X-Amz-...
"""

from __future__ import annotations

from typing import Any

UPLOAD_KEY = "{}/{}.jpg"   # request id, upload name: face_upload_name(index) or POSE_UPLOAD
POSE_UPLOAD = "pose"
RESULT_KEY = "{}/identity_body_{}.{}"


def face_upload_name(index: int) -> str:
    """The upload name of face photo ``index`` (0-based): photo 1 keeps the one-photo name "face"."""
    return "face" if index == 0 else f"face_{index + 1}"


class Storage:
    """Uploads and results in two buckets of one S3 endpoint."""

    def __init__(
        self,
        client: Any,
        uploads_bucket: str,
        results_bucket: str,
        presign_expiry_s: int,
        public_base_url: str | None = None,
        presign_client: Any = None,
    ) -> None:
        self.client = client
        # presigning makes no request: a second client only decides which host the URL names
        self.presign_client = presign_client if presign_client is not None else client
        self.uploads_bucket = uploads_bucket
        self.results_bucket = results_bucket
        self.presign_expiry_s = int(presign_expiry_s)
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None

    @classmethod
    def from_settings(cls, settings: Any, max_pool_connections: int = 10) -> "Storage":
        """A boto3 client with path-style addressing (works on every S3-compatible server).

        One client serves every thread: boto3 clients are thread-safe, and their urllib3 pool keeps
        ``max_pool_connections`` keep-alive connections; size it to the number of threads that
        call at once (the gateway passes its threadpool size), or extra calls open and drop a
        connection each time.

        Example::

            Storage.from_settings(settings, max_pool_connections=40)
        """
        # boto3 is imported here, not at module import: it costs ~0.15 s and the gateway starts fast
        import boto3
        from botocore.config import Config

        def client_for(endpoint_url: str | None) -> Any:
            return boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                region_name=settings.s3_region,
                aws_access_key_id=settings.s3_access_key,
                aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
                config=Config(
                    s3={"addressing_style": "path"},
                    signature_version="s3v4",
                    connect_timeout=5,
                    read_timeout=30,
                    retries={"max_attempts": 3, "mode": "standard"},
                    max_pool_connections=max_pool_connections,
                ),
            )

        client = client_for(settings.s3_endpoint_url)
        presign_client = client_for(settings.s3_presign_endpoint_url) if settings.s3_presign_endpoint_url else None
        return cls(
            client,
            settings.s3_bucket_uploads,
            settings.s3_bucket_results,
            settings.s3_presign_expiry_s,
            settings.public_results_base_url,
            presign_client,
        )

    def ensure_buckets(self) -> None:
        """Create both buckets if missing. New buckets are private (no ACL granting reads)."""
        from botocore.exceptions import ClientError

        for bucket in (self.uploads_bucket, self.results_bucket):
            try:
                self.client.head_bucket(Bucket=bucket)
            except ClientError as exc:
                if _status(exc) != 404 and _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                    raise
                try:
                    self.client.create_bucket(Bucket=bucket)
                except ClientError as race:
                    # several gateway processes (idbody api --workers N) ensure the buckets at once
                    if _code(race) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

    # --- uploads ---------------------------------------------------------------------------------

    def put_upload(self, request_id: str, data: bytes, content_type: str, name: str = "face") -> str:
        """Store a job's upload under ``name`` (``face_upload_name(index)`` for a face photo,
        ``POSE_UPLOAD`` for the pose photo); returns its key in the uploads bucket."""
        key = UPLOAD_KEY.format(request_id, name)
        self.client.put_object(Bucket=self.uploads_bucket, Key=key, Body=data, ContentType=content_type)
        return key

    def get_upload(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.uploads_bucket, Key=key)["Body"].read()

    def delete_upload(self, key: str) -> None:
        self.client.delete_object(Bucket=self.uploads_bucket, Key=key)

    # --- results ---------------------------------------------------------------------------------

    def put_result(self, request_id: str, index: int, data: bytes, content_type: str = "image/png",
                   extension: str = "png") -> str:
        """Store result image ``index`` of a job, encoded as ``content_type`` (its key ends in
        ``extension``: shared.output_formats); returns its key in the results bucket."""
        key = RESULT_KEY.format(request_id, int(index), extension)
        self.client.put_object(Bucket=self.results_bucket, Key=key, Body=data, ContentType=content_type)
        return key

    def result_url(self, key: str, expires_in_s: int | None = None) -> str:
        """A URL a browser can GET: public base + key, or a presigned GET valid ``expires_in_s``
        (default presign_expiry_s; webhooks ask for longer: worker.webhooks.links).

        Example::

            storage.result_url("r1/identity_body_0.png")
        """
        if self.public_base_url:
            return f"{self.public_base_url}/{key}"
        return self.presign_client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.results_bucket, "Key": key},
            ExpiresIn=int(expires_in_s or self.presign_expiry_s),
        )

    def delete_results(self, request_id: str) -> int:
        """Delete every result image of a job; returns how many objects were deleted."""
        deleted = 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.results_bucket, Prefix=f"{request_id}/"):
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                self.client.delete_objects(Bucket=self.results_bucket, Delete={"Objects": objects, "Quiet": True})
                deleted += len(objects)
        return deleted

    def ping(self) -> bool:
        """True when the endpoint answers and the uploads bucket exists."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.uploads_bucket)
            return True
        except (BotoCoreError, ClientError):
            return False


def _status(exc: Any) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
