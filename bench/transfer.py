"""A node directory to and from S3: concurrent managed transfers against one file at a time.

The directory holds 200 small files (4-64 KiB) and one large file (300 MB by default), and a
result file that commits it. New: the Stager as it is (a directory's files on 8 threads,
a large file downloaded in ranged parts through boto3's managed transfer, the result file
last). Baseline, measured in the same run on the same data: what the Stager did before, one
file after the other, each upload through ``upload_file`` and each download one GetObject
streamed to disk. Both run against the local stack's S3 (moto's server in its own process
on loopback; no Docker needed) and check that bytes and mtimes arrive intact. Prints a
markdown table.

    python bench/transfer.py [--small 200] [--large-mb 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from nipype_batch.aws.session import ClientFactory  # noqa: E402
from nipype_batch.aws.staging import MTIME_META, SSE, Stager  # noqa: E402
from nipype_batch.protocol import is_result_file  # noqa: E402

BUCKET = "bench-transfer"
MTIME_NS = 1_600_000_000_123_456_789


class OneByOne:
    """The baseline: the Stager's file moves before they were concurrent and managed."""

    def __init__(self, stager: Stager) -> None:
        self.stager = stager
        self.s3 = stager.s3

    def upload_tree(self, root: str) -> None:
        files = sorted(_files(root), key=lambda p: is_result_file(os.path.relpath(p, root)))
        list(self.stager.list_tree(root))  # stale objects to delete first: none here
        for path in files:
            st = os.stat(path)
            self.s3.upload_file(path, BUCKET, self.stager.key_for(path), ExtraArgs={
                "Metadata": {MTIME_META: str(st.st_mtime_ns)}, "ServerSideEncryption": SSE})

    def fetch_node_dir(self, root: str, everything: bool = True) -> None:
        keys = sorted((is_result_file(os.path.relpath(self.stager.path_for(key), root)), key)
                      for key, _size in self.stager.list_tree(root))
        for _is_result, key in keys:
            path = self.stager.path_for(key)
            obj = self.s3.get_object(Bucket=BUCKET, Key=key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".nbpart", "wb") as out:
                shutil.copyfileobj(obj["Body"], out, length=1 << 20)
            os.replace(path + ".nbpart", path)
            mtime = int(obj["Metadata"][MTIME_META])
            os.utime(path, ns=(mtime, mtime))


def make_node_dir(root: Path, small: int, large_mb: int) -> dict[str, bytes]:
    """The node directory; returns relpath -> content of the small files (to check)."""
    rng = random.Random(7)
    contents = {}
    for i in range(small):
        rel = f"out/{i // 50:02d}/file_{i:03d}.txt"
        contents[rel] = os.urandom(rng.randint(4, 64) * 1024)
    contents["result_node.pklz"] = os.urandom(2048)
    for i, (rel, data) in enumerate(contents.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(MTIME_NS + i, MTIME_NS + i))
    if large_mb:
        with open(root / "dwi.nii", "wb") as fh:
            block = os.urandom(1 << 20)
            for _ in range(large_mb):
                fh.write(block)
        os.utime(root / "dwi.nii", ns=(MTIME_NS, MTIME_NS))
    return contents


def check(root: Path, contents: dict[str, bytes], large_mb: int) -> None:
    """Every file back with its bytes and mtime."""
    for i, (rel, data) in enumerate(contents.items()):
        path = root / rel
        assert path.read_bytes() == data, rel
        assert path.stat().st_mtime_ns == MTIME_NS + i, rel
    if large_mb:
        assert (root / "dwi.nii").stat().st_size == large_mb << 20
        assert (root / "dwi.nii").stat().st_mtime_ns == MTIME_NS


def timed(action: Callable[[], Any], client: ClientFactory) -> tuple[float, int]:
    """Seconds and API calls of one action."""
    before = sum(client.counter.counts.values())
    started = time.perf_counter()
    action()
    return time.perf_counter() - started, sum(client.counter.counts.values()) - before


def run_case(client: ClientFactory, work: Path, small: int, large_mb: int,
             repeat: int) -> dict[str, dict[str, tuple[float, int]]]:
    """Median seconds and calls of up and down, old and new, for one directory's content."""
    src = work / f"src-{small}-{large_mb}"
    contents = make_node_dir(src, small, large_mb)
    results: dict[str, dict[str, list[tuple[float, int]]]] = {}
    for round_ in range(repeat):
        for name in ("one by one", "concurrent, managed"):
            s3 = client("s3")
            stager = Stager(s3, BUCKET, f"{name[:3]}{round_}")
            mover = OneByOne(stager) if name == "one by one" else stager
            up = timed(partial(mover.upload_tree, str(src)), client)
            # Fetch to the same paths, as a job does: move the source away meanwhile.
            shutil.move(src, work / "aside")
            down = timed(partial(mover.fetch_node_dir, str(src), everything=True), client)
            check(src, contents, large_mb)
            shutil.rmtree(src)
            shutil.move(work / "aside", src)
            _empty(s3, stager.prefix)  # moto holds objects in memory
            results.setdefault(name, {}).setdefault("up", []).append(up)
            results[name].setdefault("down", []).append(down)
    shutil.rmtree(src)
    return {name: {way: (statistics.median(s for s, _ in runs), runs[0][1])
                   for way, runs in ways.items()} for name, ways in results.items()}


def _empty(s3: Any, prefix: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})


def _files(root: str) -> list[str]:
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large-mb", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import boto3

    from nipype_batch.local.server import REGION
    from nipype_batch.local.stack import THROWAWAY_KEY, start_emulator

    emulator = start_emulator()
    try:
        session = boto3.Session(aws_access_key_id=THROWAWAY_KEY,
                                aws_secret_access_key=THROWAWAY_KEY, region_name=REGION)
        client = ClientFactory.for_session(session, f"http://127.0.0.1:{emulator.port}")
        s3 = client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="warm-up", Body=b"x")  # the emulator's first answer
        s3.get_object(Bucket=BUCKET, Key="warm-up")["Body"].read()  # is slow
        cases = [(f"{args.small} small files", args.small, 0),
                 (f"one {args.large_mb} MB file", 0, args.large_mb)]
        with tempfile.TemporaryDirectory(prefix="nipype-batch-transfer-") as tmp:
            rows = [(label, run_case(client, Path(tmp), small, large, args.repeat))
                    for label, small, large in cases]
    finally:
        emulator.stop()

    print(f"\nA node directory to and from the local stack's S3 (moto server on loopback), "
          f"median of {args.repeat}\n")
    print("| files | direction | one by one | concurrent, managed | new / old | API calls "
          "old -> new |")
    print("|---|---|---:|---:|---:|---|")
    for label, result in rows:
        for way in ("up", "down"):
            (old_s, old_calls), (new_s, new_calls) = (result["one by one"][way],
                                                      result["concurrent, managed"][way])
            print(f"| {label} + result | {way} | {old_s:.2f} s | {new_s:.2f} s | "
                  f"{new_s / old_s:.2f}x | {old_calls} -> {new_calls} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
