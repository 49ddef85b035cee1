# Job image: a base with Python, plus the workflow's pinned wheels (installed with no network),
# plus nipype-batch's runner, plus the user's local code. Two stages, so that the wheels never
# enter the final image; the venv keeps its absolute path, so copying it between stages is safe.
# Layers run from stable to changing: base, venv, runner, user code. A change of user code
# rebuilds only the last layer.
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS venv
COPY wheels/ /tmp/nipype-batch-wheels/
RUN python3 -m venv /opt/nipype-batch/venv \
 && /opt/nipype-batch/venv/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
      --find-links /tmp/nipype-batch-wheels -r /tmp/nipype-batch-wheels/requirements.txt

FROM ${BASE_IMAGE}
ENV PATH=/opt/nipype-batch/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/nipype-batch/src:/opt/nipype-batch/user \
    PYTHONDONTWRITEBYTECODE=1 \
    NIPYPE_NO_ET=1 \
    MPLBACKEND=Agg \
    LANG=C.UTF-8
WORKDIR /tmp
COPY --from=venv /opt/nipype-batch/venv /opt/nipype-batch/venv
COPY src/ /opt/nipype-batch/src/
COPY user/ /opt/nipype-batch/user/
