"""Files between the driver, S3 and jobs, at the same absolute paths everywhere.

A file at ``/abs/path`` lives at ``s3://bucket/<prefix>/files/abs/path``. Nipype records absolute
paths in results, hashes and inputs, so keeping them identical on both sides means nothing needs
rewriting. Each object carries the file's mtime (nanoseconds) as metadata, restored on download,
so Nipype's default size+mtime hash of a file is the same on the driver and in the job.

The files of a directory move concurrently, each through boto3's managed transfer; the node's
result file (its commit marker, :func:`~nipype_batch.protocol.is_result_file`) always moves
alone, after every other file has arrived.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import StagingError
from ..protocol import PARTIAL_SUFFIX, is_bookkeeping, is_result_file
from .bundles import pack_bookkeeping

log = logging.getLogger(__name__)

MTIME_META = "mtime-ns"
SSE = "AES256"  # every staged object is encrypted at rest (S3-managed keys)
WORKERS = 8  # files of one directory in flight at once
_PATH_MAX = 4096
_T = TypeVar("_T")


def find_paths(value: Any) -> set[str]:
    """Absolute path strings anywhere in a (nested) input or output value."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if (item.startswith("/") and len(item) < _PATH_MAX and "\n" not in item
                    and item != "/"):
                found.add(os.path.normpath(item))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return found


def paths_in_strings(value: Any) -> set[str]:
    """Absolute paths inside string values that are more than a path: the shell words of
    ``args='-R -s length /data/sub-01_dwi.bval'`` and of ``--ref=/data/tpl.nii.gz``.

    Quoted words keep their spaces (``'-i "/data/my study/t1.nii"'``). Multi-line strings are
    source code or text, not command lines, and are passed over.
    """
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif isinstance(item, str) and "/" in item and "\n" not in item and len(item) < 8192:
            try:
                words = shlex.split(item)
            except ValueError:  # an unbalanced quote: plain words still help
                words = item.split()
            if item.startswith("/") and (words == [item] or os.path.exists(item)):
                continue  # a whole path (spaces and all): find_paths' business
            for word in words:
                for candidate in (word, word.partition("=")[2]):
                    if candidate.startswith("/") and candidate != "/":
                        found.add(os.path.normpath(candidate))
    return found


@dataclass(frozen=True)
class StagedPath:
    """A path a job needs, and whether the driver saw it as a file or a directory."""

    path: str
    kind: str  # "file", "dir" or "remote" (not on the driver: look in S3 for either)


class Stager:
    """Moves files between this machine and the staging prefix of one bucket.

    Parameters
    ----------
    s3 : botocore S3 client
        Pointed at real AWS or at the local stack; this class never builds clients.
    bucket, prefix : str
        Staging location (``prefix`` may be empty).
    transfer_config : boto3.s3.transfer.TransferConfig, optional
        Boto3's managed transfer: from ``multipart_threshold`` (8 MiB) on, a file moves in
        parallel ranged parts, each retried on its own when its stream breaks.
    workers : int
        Files of a directory moved at once.
    """

    def __init__(self, s3: Any, bucket: str, prefix: str = "",
                 transfer_config: TransferConfig | None = None, workers: int = WORKERS) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.transfer_config = transfer_config or TransferConfig()
        self.workers = workers
        # (size, mtime_ns) of files known to be in S3, to skip re-uploads.
        self._known: dict[str, tuple[int, int]] = {}
        self._counting = threading.Lock()  # files move on several threads
        self.bytes_up = 0
        self.bytes_down = 0

    def key_for(self, path: str) -> str:
        """S3 key of an absolute local path."""
        base = f"{self.prefix}/files" if self.prefix else "files"
        return base + os.path.abspath(path)

    def path_for(self, key: str) -> str:
        """Absolute local path of a staged key (inverse of :meth:`key_for`)."""
        base = f"{self.prefix}/files" if self.prefix else "files"
        return key[len(base):]

    def control_key(self, *parts: str) -> str:
        """Key for our own control objects (job payloads, node pickles)."""
        base = f"{self.prefix}/control" if self.prefix else "control"
        return "/".join([base, *parts])

    # ---- upload ---------------------------------------------------------------------------

    def upload_file(self, path: str, key: str | None = None) -> None:
        """Upload one file with its mtime, unless S3 already holds this size and mtime."""
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns)
        key = key or self.key_for(path)
        if self._known.get(key) == stamp:
            return
        try:
            self.s3.upload_file(
                path, self.bucket, key,
                ExtraArgs={"Metadata": {MTIME_META: str(st.st_mtime_ns)},
                           "ServerSideEncryption": SSE},
                Config=self.transfer_config,
            )
        except (ClientError, S3UploadFailedError, OSError) as exc:
            raise StagingError(
                f"could not upload {path} to s3://{self.bucket}/{key}: {exc}. Check that the "
                "bucket exists and that your credentials may write to it."
            ) from exc
        self._count(up=st.st_size)
        self._known[key] = stamp

    def holds(self, path: str) -> bool:
        """Whether S3 is known to hold this file's current size and mtime (no request made)."""
        st = os.stat(path)
        return self._known.get(self.key_for(path)) == (st.st_size, st.st_mtime_ns)

    def ensure_uploaded(self, path: str) -> None:
        """Upload a local file or directory tree unless S3 holds the same size and mtime."""
        if os.path.isdir(path):
            self._each(self._ensure_file, _walk_files(path))
        else:
            self._ensure_file(path)

    def _ensure_file(self, path: str) -> None:
        key = self.key_for(path)
        st = os.stat(path)
        if self._known.get(key) == (st.st_size, st.st_mtime_ns):
            return
        remote = self._head(key)
        if remote == (st.st_size, st.st_mtime_ns):
            self._known[key] = remote
            return
        self.upload_file(path, key)

    def upload_tree(self, root: str, bundle_key: str | None = None) -> list[str]:
        """Mirror ``root`` to S3, the node's result file last (the commit marker).

        Objects under the prefix with no local file (a previous attempt's hash or result) are
        deleted before the result file goes up, so S3 never shows a stale commit. With
        ``bundle_key``, the bookkeeping files also go up as one object (see :mod:`bundles`)
        just before the result file.
        """
        files = sorted(_walk_files(root), key=lambda p: is_result_file(os.path.relpath(p, root)))
        local_keys = {self.key_for(p) for p in files}
        stale = [key for key, _size in self.list_tree(root) if key not in local_keys]
        for start in range(0, len(stale), 1000):
            batch = [{"Key": key} for key in stale[start:start + 1000]]
            try:
                self.s3.delete_objects(Bucket=self.bucket,
                                       Delete={"Objects": batch, "Quiet": True})
            except ClientError as exc:
                raise StagingError(
                    f"could not delete {len(batch)} stale objects under "
                    f"s3://{self.bucket}/{self.key_for(root)}/: {exc}"
                ) from exc
        commits = [p for p in files if is_result_file(os.path.relpath(p, root))]
        self._each(self.upload_file, files[:len(files) - len(commits)])
        if bundle_key and commits:
            self.put_bytes(bundle_key, pack_bookkeeping(root, files))
        for file_path in commits:
            self.upload_file(file_path)
        return files

    # ---- download -------------------------------------------------------------------------

    def download(self, staged: StagedPath) -> int:
        """Fetch a staged path to the same local path; return how many files came down."""
        if staged.kind == "file":
            return int(self.download_file(self.key_for(staged.path), staged.path))
        if staged.kind == "remote" and self.download_file(self.key_for(staged.path), staged.path):
            return 1
        if staged.kind == "dir":  # an empty one too: Directory(exists=True) must hold here
            os.makedirs(staged.path, exist_ok=True)
        keys = [key for key, _size in self.list_tree(staged.path)]
        return sum(self._each(lambda key: self.download_file(key, self.path_for(key)), keys))

    def download_file(self, key: str, path: str, missing_ok: bool = True) -> bool:
        """Download one object to ``path`` restoring its mtime; False if it does not exist.

        One GetObject brings the object's size and mtime and, for a small file, its bytes,
        as it always has. A file of ``multipart_threshold`` or more leaves that stream after
        its headers and comes through boto3's managed download instead (a HeadObject, then
        parallel ranged GETs pinned to the object's ETag).
        """
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if missing_ok and self._absent(key, exc):
                return False
            raise StagingError(
                f"could not download s3://{self.bucket}/{key}: {exc}"
            ) from exc
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = path + PARTIAL_SUFFIX
        size = obj.get("ContentLength", 0)
        if size >= self.transfer_config.multipart_threshold:
            obj["Body"].close()
            try:
                self.s3.download_file(self.bucket, key, tmp, Config=self.transfer_config)
            except (ClientError, BotoCoreError, S3TransferFailedError) as exc:
                raise StagingError(
                    f"could not download s3://{self.bucket}/{key}: {exc}"
                ) from exc
        else:
            with open(tmp, "wb") as out:
                shutil.copyfileobj(obj["Body"], out, length=1 << 20)
        os.replace(tmp, path)
        mtime = obj.get("Metadata", {}).get(MTIME_META)
        if mtime:
            os.utime(path, ns=(int(mtime), int(mtime)))
        self._count(down=size)
        st = os.stat(path)
        self._known[key] = (st.st_size, st.st_mtime_ns)
        return True

    def list_tree(self, root: str) -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every staged file under a local directory path."""
        prefix = self.key_for(root).rstrip("/") + "/"
        paginator = self.s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"], obj["Size"]
        except ClientError as exc:
            raise StagingError(
                f"could not list s3://{self.bucket}/{prefix}: {exc}"
            ) from exc

    def fetch_node_dir(self, node_dir: str, everything: bool, data_only: bool = False) -> bool:
        """Bring a finished node's directory to the driver; False if it has no result file.

        Only bookkeeping (results, hashes, reports) unless ``everything``; the result file last
        so that a driver that dies mid-way never sees a half-fetched node as cached. With
        ``data_only`` (the bookkeeping came in a bundle), only the other files, and True.
        """
        entries = []
        for key, _size in self.list_tree(node_dir):
            rel = os.path.relpath(self.path_for(key), node_dir)
            if data_only:
                if not is_bookkeeping(rel):
                    entries.append((False, key))
            elif everything or is_bookkeeping(rel):
                entries.append((is_result_file(rel), key))
        if not data_only and not any(is_result for is_result, _ in entries):
            return False
        commits = [key for is_result, key in sorted(entries) if is_result]
        self._each(lambda key: self.download_file(key, self.path_for(key), missing_ok=False),
                   [key for is_result, key in sorted(entries) if not is_result])
        for key in commits:
            self.download_file(key, self.path_for(key), missing_ok=False)
        return True

    # ---- small objects --------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> str:
        """Store a control object; return its ``s3://`` URI."""
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ServerSideEncryption=SSE)
        except ClientError as exc:
            raise StagingError(
                f"could not write s3://{self.bucket}/{key}: {exc}. Check that the bucket exists "
                "and that your credentials may write to it."
            ) from exc
        self._count(up=len(data))
        return f"s3://{self.bucket}/{key}"

    def list_control(self, prefix_key: str) -> list[str]:
        """Last key parts of the control objects under ``prefix_key`` (one request a page)."""
        prefix = prefix_key.rstrip("/") + "/"
        paginator = self.s3.get_paginator("list_objects_v2")
        try:
            return [obj["Key"][len(prefix):]
                    for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
                    for obj in page.get("Contents", [])]
        except ClientError as exc:
            raise StagingError(f"could not list s3://{self.bucket}/{prefix}: {exc}") from exc

    def get_bytes(self, key: str, missing_ok: bool = False) -> bytes | None:
        """Read a control object (None if it does not exist and ``missing_ok``)."""
        try:
            data = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if missing_ok and self._absent(key, exc):
                return None
            raise StagingError(f"could not read s3://{self.bucket}/{key}: {exc}") from exc
        self._count(down=len(data))
        return data

    def _head(self, key: str) -> tuple[int, int] | None:
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if self._absent(key, exc):
                return None
            raise StagingError(f"could not read s3://{self.bucket}/{key}: {exc}") from exc
        mtime = head.get("Metadata", {}).get(MTIME_META)
        return (head["ContentLength"], int(mtime)) if mtime else None

    def _absent(self, key: str, exc: ClientError) -> bool:
        """Whether a failed read means the object does not exist.

        S3 answers 404 only to a caller that may list the bucket unconditionally; the job
        role may list its prefix alone (a condition that a GetObject or HeadObject does not
        carry), so a missing object answers 403 there. A 403 is then settled by listing the
        key as a prefix, which the role may do.
        """
        if _is_not_found(exc):
            return True
        if str(exc.response.get("Error", {}).get("Code", "")) not in ("403", "AccessDenied"):
            return False
        try:
            listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        except ClientError:
            return False  # not allowed to list either: a real denial
        return not any(obj.get("Key") == key for obj in listed.get("Contents", []))

    # ---- concurrency ----------------------------------------------------------------------

    def _each(self, move: Callable[[str], _T], paths: Iterable[str]) -> list[_T]:
        """``move`` each path or key on up to ``workers`` threads, in order of the results.

        Every move ends before this returns; then the first error, if any, raises.
        """
        paths = list(paths)
        if len(paths) < 2 or self.workers < 2:
            return [move(path) for path in paths]
        with ThreadPoolExecutor(min(self.workers, len(paths)),
                                thread_name_prefix="nipype-batch-stage") as pool:
            futures = [pool.submit(move, path) for path in paths]
        return [future.result() for future in futures]

    def _count(self, up: int = 0, down: int = 0) -> None:
        with self._counting:
            self.bytes_up += up
            self.bytes_down += down


def _walk_files(root: str) -> Iterator[str]:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if not name.endswith(PARTIAL_SUFFIX):
                yield os.path.join(dirpath, name)


def _is_not_found(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")
