"""The blob store adapter (S3) for proof-of-delivery images: presigned uploads and reads, and checks.

The bucket is private and encrypted (infra/resources.json); objects are only
ever reached through short-lived presigned URLs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.core.config import get_settings


@dataclass(frozen=True, slots=True)
class PresignedUpload:
    url: str
    fields: dict[str, str]
    expires_in_s: int


@dataclass(frozen=True, slots=True)
class StoredObject:
    size: int
    content_type: str | None
    head: bytes  # the first bytes, to check the file really is the image type it claims


class BlobStore:
    def __init__(self) -> None:
        self._client: Any = None
        self._upload_url: str | None = None

    @property
    def client(self) -> Any:
        if self._client is None:  # boto3's S3 client costs ~100 ms: only the proof routes pay for it
            import boto3
            from botocore.config import Config

            s = get_settings()
            self._client = boto3.client(
                "s3", region_name=s.aws_region, endpoint_url=s.aws_endpoint_url,
                config=Config(signature_version="s3v4", connect_timeout=2, read_timeout=5,
                              retries={"max_attempts": 3, "mode": "standard"},
                              s3={"addressing_style": "path"} if s.aws_endpoint_url else {}))
        return self._client

    def presigned_upload(self, key: str, content_type: str, max_bytes: int, expires_s: int) -> PresignedUpload:
        """A browser-style POST upload whose policy pins the key, the content type and the size range."""
        bucket = get_settings().bucket_name
        post = self.client.generate_presigned_post(
            Bucket=bucket, Key=key, Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
            ExpiresIn=expires_s)
        return PresignedUpload(post["url"], {k: str(v) for k, v in post["fields"].items()}, expires_s)

    def upload_url(self) -> str:
        """Where presigned uploads go (the bucket's URL): the driver app's CSP lets the page connect there.
        Signed locally, no request is made."""
        if self._upload_url is None:
            post = self.client.generate_presigned_post(Bucket=get_settings().bucket_name, Key="probe", ExpiresIn=60)
            self._upload_url = str(post["url"])
        return self._upload_url

    def stored(self, key: str, head_bytes: int = 16) -> StoredObject | None:
        """Size, stored content type and first bytes of an object; None when it does not exist."""
        from botocore.exceptions import ClientError

        bucket = get_settings().bucket_name
        try:
            response = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{head_bytes - 1}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "InvalidRange"):
                return None
            raise
        total = response.get("ContentRange", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else int(response.get("ContentLength", 0))
        return StoredObject(size, response.get("ContentType"), response["Body"].read())

    def presigned_read(self, key: str, expires_s: int) -> str:
        bucket = get_settings().bucket_name
        return str(self.client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                      ExpiresIn=expires_s))
