"""The image builder with the real Docker daemon and registry of the local stack."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

import certifi
import pytest
from nipype import Function, Node, Workflow

from nipype_batch import BatchPlugin, ImageBuildError, build_images
from nipype_batch.images.build import DEFAULT_BASE_IMAGE, ImageSpec, prepare_image
from nipype_batch.images.publish import ImageBuilder
from nipype_batch.images.registries import PlainRegistry

pytestmark = pytest.mark.docker


@pytest.fixture
def builder(local_stack):
    return ImageBuilder(local_stack.docker, PlainRegistry(local_stack.registry_address))


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A lab's own helper module, on no index, with a secret lying next to it."""
    lib = tmp_path / "userlib"
    pkg = lib / f"labtools_{uuid.uuid4().hex[:8]}"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("def double(x):\n    return 2 * x\n")
    (pkg / ".env").write_text("LAB_SECRET=do-not-ship-7f3a9\n")
    monkeypatch.syspath_prepend(str(lib))
    return pkg


def _layers(docker, ref):
    return docker.images.get(ref).attrs["RootFS"]["Layers"]


def test_unchanged_image_costs_no_build_and_no_push(builder, user_module, local_stack):
    spec = ImageSpec(DEFAULT_BASE_IMAGE, local_code=(str(user_module),))
    first = builder.ensure(spec)
    assert first.built and first.pushed  # new user code: a build, if only of its top layer

    started = time.monotonic()
    again = builder.ensure(spec)
    assert (again.built, again.pushed, again.ref) == (False, False, first.ref)
    assert time.monotonic() - started < 1.0
    assert "@sha256:" in again.ref

    # a change of user code rebuilds only the top layer
    (user_module / "__init__.py").write_text("def double(x):\n    return x + x\n")
    changed = builder.ensure(spec)
    assert changed.built and changed.tag != first.tag
    old, new = _layers(local_stack.docker, first.ref), _layers(local_stack.docker, changed.ref)
    assert len(old) == len(new) and old[:-1] == new[:-1] and old[-1] != new[-1]


def test_a_dependency_version_changes_the_tag(local_stack):
    # tomli is not installed on the driver, so any exact version may be asked for
    one = prepare_image(local_stack.docker, ImageSpec(DEFAULT_BASE_IMAGE, ("tomli==2.0.1",)))
    two = prepare_image(local_stack.docker, ImageSpec(DEFAULT_BASE_IMAGE, ("tomli==2.0.2",)))
    assert one.tag != two.tag
    assert "tomli-2.0.1-py3-none-any.whl" in one.wheels


def _uses_lab_helper(x, module):
    import importlib

    return importlib.import_module(module).double(x)


def test_workflow_calling_the_users_local_module(tmp_path, user_module, local_args):
    source = (
        f"def call_helper(x):\n    from {user_module.name} import double\n"
        "    return double(x)\n"
    )
    wf = Workflow(name="locallib", base_dir=str(tmp_path / "work"))
    node = Node(Function(input_names=["x"], output_names=["out"], function=source),
                name="helper")
    node.inputs.x = 21
    wf.add_nodes([node])
    result = wf.run(plugin="AWSBatch", plugin_args=local_args)
    (done,) = result.nodes()
    assert done.result.outputs.out == 42


def _image_bytes_contain(docker, ref, needles: list[bytes]) -> list[bytes]:
    """Which needles occur anywhere in the saved image (every layer, config and history)."""
    found, tail = set(), b""
    keep = max(len(n) for n in needles)
    for chunk in docker.images.get(ref).save(named=True):
        window = tail + chunk
        found.update(n for n in needles if n in window)
        tail = window[-keep:]
    return sorted(found)


def test_no_secret_enters_any_layer(builder, user_module, monkeypatch, local_stack):
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIANIPYPEBATCHFAKE01",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-nipype-batch-fake-key-0123456789",
        "AWS_SESSION_TOKEN": "nipype-batch-fake-session-token-abcdef",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    (user_module / "extra.py").write_text(f"VALUE = {uuid.uuid4().hex!r}\n")  # force a build
    image = builder.ensure(ImageSpec(DEFAULT_BASE_IMAGE, local_code=(str(user_module),)))
    assert image.built

    needles = [v.encode() for v in secrets.values()] + [b"do-not-ship-7f3a9"]
    needles += _driver_only_certificates(local_stack.docker, image.ref)
    assert _image_bytes_contain(local_stack.docker, image.ref, needles) == []


def _driver_only_certificates(docker, ref) -> list[bytes]:
    """Certificates the driver trusts that the image's own CA bundle lacks (a proxy's CA)."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if not bundle.exists():
        return []
    mine = _certs(bundle.read_bytes())
    theirs = _certs(docker.containers.run(ref, ["cat", "/etc/ssl/certs/ca-certificates.crt"],
                                          remove=True, network_mode="none", entrypoint=[]))
    # public roots newer than the image's Debian bundle ship in certifi's (a wheel the image
    # installs): public, not the driver's; a proxy's CA is in neither
    theirs |= _certs(Path(certifi.where()).read_bytes())
    # the base64 body's middle line identifies a certificate without PEM framing
    return [cert.splitlines()[len(cert.splitlines()) // 2] for cert in mine - theirs]


def _certs(pem: bytes) -> set[bytes]:
    parts = pem.split(b"-----BEGIN CERTIFICATE-----")[1:]
    return {p.split(b"-----END CERTIFICATE-----")[0].strip() for p in parts}


def test_base_image_with_another_python_is_refused_before_submission(tmp_path, local_stack,
                                                                       local_args):
    fake = "nipype-batch-test/python39:latest"
    dockerfile = (
        f"FROM {DEFAULT_BASE_IMAGE}\n"
        "RUN printf '#!/bin/sh\\necho 3.9\\n' > /usr/local/bin/python3 "
        "&& chmod +x /usr/local/bin/python3\n"
    )
    local_stack.docker.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=fake,
                                    network_mode="none", rm=True)
    wf = Workflow(name="oldpy", base_dir=str(tmp_path))
    node = Node(Function(input_names=["x"], output_names=["out"], function=_uses_lab_helper),
                name="n")
    node.inputs.x, node.inputs.module = 1, "os"
    wf.add_nodes([node])
    plugin = BatchPlugin({**local_args, "base_image": fake})
    with pytest.raises(ImageBuildError, match=r"has Python 3\.9 but this driver runs Python 3\.11"):
        wf.run(plugin=plugin)
    assert plugin.submitted_job_ids == []


def test_ready_image_missing_the_runner_is_refused(tmp_path, local_args):
    wf = Workflow(name="ready", base_dir=str(tmp_path))
    node = Node(Function(input_names=["x"], output_names=["out"], function=_uses_lab_helper),
                name="n")
    wf.add_nodes([node])
    plugin = BatchPlugin({**local_args, "image": DEFAULT_BASE_IMAGE})
    with pytest.raises(ImageBuildError, match=r"nipype missing .*nipype_batch missing"):
        wf.run(plugin=plugin)
    assert plugin.submitted_job_ids == []


def test_build_images_ahead_of_a_run(tmp_path, local_args):
    wf = Workflow(name="ahead", base_dir=str(tmp_path))
    node = Node(Function(input_names=["x"], output_names=["out"], function=_uses_lab_helper),
                name="n")
    wf.add_nodes([node])
    (first,) = build_images(wf, local_args)
    (second,) = build_images(wf, local_args)
    assert second.ref == first.ref and not second.built and not second.pushed


STUDY = '''
from nipype import Function, Node, Workflow


def _f(x):
    import pluggy
    return x


def make_workflow():
    wf = Workflow(name="study", base_dir="work")
    node = Node(Function(input_names=["x"], output_names=["out"], function=_f), name="n")
    wf.add_nodes([node])
    return wf


if __name__ == "__main__":
    raise SystemExit("importing the script must not run it")
'''


def test_cli_build_twice_builds_once(tmp_path, local_stack):
    import json
    import subprocess
    import sys

    (tmp_path / "study.py").write_text(STUDY)

    def build(*extra):
        return subprocess.run(
            [sys.executable, "-m", "nipype_batch.cli", "build", "study.py:make_workflow",
             "--plugin-args", '{"backend": "local"}', *extra],
            capture_output=True, text=True, cwd=tmp_path, timeout=300,
        )

    first = build()
    assert first.returncode == 0, first.stderr
    second = build("--json")
    assert second.returncode == 0, second.stderr
    (image,) = json.loads(second.stdout)
    assert image["built"] is False and image["pushed"] is False
    assert image["ref"] in first.stdout

    missing = subprocess.run([sys.executable, "-m", "nipype_batch.cli", "build", "study.py:nope"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 1
    assert "has no attribute 'nope'" in missing.stderr


def _variant(docker, name: str, run: str) -> str:
    """A base image derived from the default one (built offline)."""
    dockerfile = f"FROM {DEFAULT_BASE_IMAGE}\nRUN {run}\n"
    docker.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=name, network_mode="none",
                        rm=True)
    return name


def test_failed_build_shows_the_failing_step_and_its_log(tmp_path, local_stack, builder):
    broken = _variant(local_stack.docker, "nipype-batch-test/novenv:latest",
                      "rm -rf /usr/lib/python3.11/venv")
    with pytest.raises(ImageBuildError, match=r"(?s)docker build of .* failed.*build log tail.*"
                                              r"python3 -m venv"):
        builder.ensure(ImageSpec(broken))


def _read_marker(x):
    with open("/etc/lab-marker") as fh:
        return fh.read().strip()


def test_a_node_can_name_its_own_base_image(tmp_path, local_stack, local_args):
    _variant(local_stack.docker, "nipype-batch-test/with-tool:latest",
             "echo fsl-like-tool-here > /etc/lab-marker")
    wf = Workflow(name="bases", base_dir=str(tmp_path))
    special = Node(Function(input_names=["x"], output_names=["out"], function=_read_marker),
                   name="special")
    special.plugin_args = {"base_image": "nipype-batch-test/with-tool:latest"}
    plain = Node(Function(input_names=["x"], output_names=["out"], function=_read_marker),
                 name="plain")
    special.inputs.x = plain.inputs.x = 1
    wf.add_nodes([special, plain])
    plugin = BatchPlugin(local_args)
    with pytest.raises(RuntimeError, match="No such file or directory: '/etc/lab-marker'"):
        wf.run(plugin=plugin)
    assert len({image.ref for image in plugin.published_images}) == 2
    result = (tmp_path / "bases" / "special" / "_nipype_batch.json").read_text()
    assert '"node_failed": false' in result
