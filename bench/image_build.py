"""Cost of job images: cold build, unchanged workflow, and a change of user code.

Cold means nothing cached: a fresh wheel cache and a base image variant with an id of its own,
so no Docker build cache applies. Prints a table with ratios against the cold build.

    python bench/image_build.py [--packages dipy nibabel]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", nargs="*", default=[],
                        help="extra requirements, as in plugin_args['packages']")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nipype-batch-bench-") as tmp:
        os.environ["NIPYPE_BATCH_CACHE"] = str(Path(tmp, "cache"))  # cold wheel cache
        from nipype_batch.images.build import DEFAULT_BASE_IMAGE, ImageSpec
        from nipype_batch.images.publish import ImageBuilder
        from nipype_batch.images.registries import PlainRegistry
        from nipype_batch.local import LocalStack

        stack = LocalStack.get()
        docker = stack.docker
        base = f"nipype-batch-bench-base:{uuid.uuid4().hex[:8]}"
        docker.images.build(
            fileobj=io.BytesIO(f"FROM {DEFAULT_BASE_IMAGE}\nLABEL bench={base}\n".encode()),
            tag=base, rm=True, network_mode="none",
        )
        code = Path(tmp, "code", f"labcode_{uuid.uuid4().hex[:6]}")
        code.mkdir(parents=True)
        (code / "__init__.py").write_text("def f(x):\n    return x\n")
        builder = ImageBuilder(docker, PlainRegistry(stack.registry_address))
        spec = ImageSpec(base, tuple(args.packages), (str(code),))

        rows = []
        for label in ("cold build (wheels, venv, push)", "unchanged workflow"):
            started = time.perf_counter()
            image = builder.ensure(spec)
            rows.append((label, time.perf_counter() - started, image))
        (code / "__init__.py").write_text("def f(x):\n    return 2 * x\n")
        started = time.perf_counter()
        image = builder.ensure(spec)
        rows.append(("user code changed", time.perf_counter() - started, image))
        size = docker.images.get(image.ref).attrs["Size"] / 1e6
        base_size = docker.images.get(base).attrs["Size"] / 1e6
        docker.images.remove(base, force=True)

    cold = rows[0][1]
    print(f"\nJob image on the default base, extra packages: {args.packages or 'none'}\n")
    print("| step | seconds | vs cold | built | pushed |")
    print("|---|---|---|---|---|")
    for label, seconds, image in rows:
        print(f"| {label} | {seconds:.2f} | {seconds / cold:.3f}x | {image.built} | "
              f"{image.pushed} |")
    print(f"\nimage size {size:.0f} MB (base {base_size:.0f} MB, so {size - base_size:.0f} MB "
          "of venv, runner and user code)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
