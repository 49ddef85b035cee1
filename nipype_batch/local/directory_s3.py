"""An S3 client over a local directory, for the simulated Batch at 10,000 jobs.

The emulator's S3 answers a few hundred requests a second: enough for real workflows on the
local stack, not for 10,000 jobs of about ten requests each in a test. This client implements
the calls :class:`~nipype_batch.aws.staging.Stager` and the runner make (same arguments, same
answers, same ``ClientError`` codes), storing each object as a file with its metadata beside
it. Driver and worker processes share it through the filesystem. It skips botocore, so the
driver's CPU measured against it leaves out botocore's own cost per S3 request; the benchmark
measures that cost separately and adds it back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import types
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

_PARTIAL = ".directory-s3-"


def _missing(operation: str, key: str) -> ClientError:
    code = "404" if operation == "HeadObject" else "NoSuchKey"
    return ClientError({"Error": {"Code": code, "Message": f"no object {key}"}}, operation)


class DirectoryS3:
    """The subset of a botocore S3 client that staging uses, on a directory."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.counts: Counter[str] = Counter()
        self._hooks: list[Callable[..., Any]] = []
        self.meta = types.SimpleNamespace(
            service_model=types.SimpleNamespace(service_name="s3",
                                                service_id=types.SimpleNamespace(
                                                    hyphenize=lambda: "s3")),
            events=types.SimpleNamespace(register=lambda _name, hook: self._hooks.append(hook)),
        )

    def _call(self, operation: str) -> None:
        for hook in self._hooks:
            hook(model=types.SimpleNamespace(name=operation))

    def _paths(self, bucket: str, key: str) -> tuple[str, str]:
        data = os.path.join(self.root, "data", bucket, key.lstrip("/"))
        return data, os.path.join(self.root, "meta", bucket, key.lstrip("/") + ".json")

    def _write(self, bucket: str, key: str, fill: Callable[[Any], None],
               metadata: dict[str, str]) -> None:
        data, meta = self._paths(bucket, key)
        for path in (data, meta):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(data), prefix=_PARTIAL,
                                         delete=False) as tmp:
            fill(tmp)
        with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(meta), prefix=_PARTIAL,
                                         delete=False) as tmp_m:
            json.dump(metadata, tmp_m)
        os.replace(tmp_m.name, meta)
        os.replace(tmp.name, data)

    # ---- the calls ------------------------------------------------------------------------

    def create_bucket(self, Bucket: str, **_: Any) -> dict[str, Any]:
        self._call("CreateBucket")
        os.makedirs(os.path.join(self.root, "data", Bucket), exist_ok=True)
        return {}

    def put_object(self, Bucket: str, Key: str, Body: bytes = b"",
                   Metadata: dict[str, str] | None = None, **_: Any) -> dict[str, Any]:
        self._call("PutObject")
        body = Body.encode() if isinstance(Body, str) else Body
        self._write(Bucket, Key, lambda fh: fh.write(body), Metadata or {})
        return {}

    def upload_file(self, Filename: str, Bucket: str, Key: str,
                    ExtraArgs: dict[str, Any] | None = None, **_: Any) -> None:
        self._call("PutObject")
        with open(Filename, "rb") as source:
            self._write(Bucket, Key, lambda fh: shutil.copyfileobj(source, fh),
                        (ExtraArgs or {}).get("Metadata") or {})

    def get_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self._call("GetObject")
        data, meta = self._paths(Bucket, Key)
        try:
            with open(meta) as fh:
                metadata = json.load(fh)
            body = open(data, "rb")  # noqa: SIM115  (the caller reads and drops it)
        except FileNotFoundError:
            raise _missing("GetObject", Key) from None
        size = os.fstat(body.fileno()).st_size
        return {"Body": body, "Metadata": metadata, "ContentLength": size}

    def download_file(self, Bucket: str, Key: str, Filename: str, **_: Any) -> None:
        # boto3's managed download: a HeadObject, then the object's bytes
        self.head_object(Bucket=Bucket, Key=Key)
        self._call("GetObject")
        shutil.copyfile(self._paths(Bucket, Key)[0], Filename)

    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self._call("HeadObject")
        data, meta = self._paths(Bucket, Key)
        try:
            with open(meta) as fh:
                metadata = json.load(fh)
            size = os.stat(data).st_size
        except FileNotFoundError:
            raise _missing("HeadObject", Key) from None
        return {"Metadata": metadata, "ContentLength": size}

    def delete_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self._call("DeleteObject")
        for path in self._paths(Bucket, Key):
            if os.path.exists(path):
                os.remove(path)
        return {}

    def delete_objects(self, Bucket: str, Delete: dict[str, Any],
                       **_: Any) -> dict[str, Any]:
        self._call("DeleteObjects")
        for item in Delete["Objects"]:
            for path in self._paths(Bucket, item["Key"]):
                if os.path.exists(path):
                    os.remove(path)
        return {}

    def get_paginator(self, operation: str) -> Any:
        assert operation == "list_objects_v2", operation
        return types.SimpleNamespace(paginate=self._list_pages)

    def _list_pages(self, Bucket: str, Prefix: str = "",
                    **_: Any) -> Iterator[dict[str, Any]]:
        base = os.path.join(self.root, "data", Bucket)
        start = os.path.join(base, os.path.dirname(Prefix.lstrip("/")))
        keys = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith(_PARTIAL):  # a write in progress
                    continue
                key = os.path.relpath(os.path.join(dirpath, name), base)
                if key.startswith(Prefix.lstrip("/")):
                    keys.append((key, os.path.getsize(os.path.join(dirpath, name))))
        keys.sort()
        for page in range(0, max(len(keys), 1), 1000):
            self._call("ListObjectsV2")
            chunk = keys[page:page + 1000]
            yield {"Contents": [{"Key": k, "Size": s} for k, s in chunk], "KeyCount": len(chunk)}
