# The control plane's image: the worker (default), and with another entrypoint the migrations
# (python -m controlplane.db migrate), the codec server (python -m starter.codec_server) and
# the SkyPilot simulator (python -m devtools.skypilot_sim).
#
#   docker build -t gpu-node-controlplane .
#   docker build --build-arg WITH_SKY_CLI=true -t gpu-node-controlplane:cli .   # CLI mode too
#
# WITH_SKY_CLI=true adds the `sky` CLI (skypilot==0.14.1, the version the contract tests pin)
# in a virtualenv of its own, so its dependencies never meet the control plane's. CLI mode
# also needs the clouds' credentials in the container user's home (/home/controlplane).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG WITH_SKY_CLI=false
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controlplane ./controlplane
COPY workflows ./workflows
COPY activities ./activities
COPY starter ./starter
COPY devtools ./devtools
RUN python -m venv /opt/controlplane \
    && /opt/controlplane/bin/pip install . \
    && /opt/controlplane/bin/python -c "import activities, controlplane, devtools, starter, workflows"
RUN if [ "$WITH_SKY_CLI" = "true" ]; then \
        python -m venv /opt/sky \
        && /opt/sky/bin/pip install "skypilot==0.14.1" \
        && /opt/sky/bin/sky --version; \
    else \
        mkdir -p /opt/sky/bin; \
    fi

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="gpu-node-controlplane" \
      org.opencontainers.image.description="Temporal worker driving vLLM nodes on SkyPilot"
ENV PATH=/opt/controlplane/bin:/opt/sky/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    METRICS_PORT=9464
RUN groupadd --system --gid 10001 controlplane \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/controlplane \
        --shell /usr/sbin/nologin controlplane
COPY --from=build /opt/controlplane /opt/controlplane
COPY --from=build /opt/sky /opt/sky
WORKDIR /app
COPY worker.py ./
USER 10001:10001
EXPOSE 9464
# The worker serves Prometheus metrics on METRICS_PORT; other entrypoints override this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('METRICS_PORT', '9464'), timeout=4)"]
ENTRYPOINT ["python", "worker.py"]
