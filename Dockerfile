# syntax=docker/dockerfile:1
# lipservice-proxy image. Build from the repository root:
#   docker build -t lipservice-proxy:0.1.0 .
# Stage 1 builds the project's wheel and installs it, with its dependencies (binary wheels only), into a
# virtualenv; it compiles the sampler's per-record scan (lipservice_proxy/sampling/wirescan.pyx) with
# the C compiler and Python headers it installs for that. Stage 2 is a fresh slim base that receives
# only that venv: no compiler, no headers.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ONLY_BINARY=:all:
# (versions unpinned: this stage is thrown away, and what the compiler makes is checked by the tests)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev python3-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lipservice_proxy ./lipservice_proxy
# The venv has no pip of its own: the base image's pip installs into it, so the final image carries no
# package manager inside the application's environment.
RUN python -m venv --without-pip /opt/lipservice \
    && pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && pip --python /opt/lipservice/bin/python install /tmp/wheels/lipservice_proxy-*.whl

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="lipservice-proxy" \
      org.opencontainers.image.description="OTLP sidecar that samples logs in flight by pattern" \
      org.opencontainers.image.licenses="Apache-2.0"
ARG UID=10001
RUN groupadd --system --gid "${UID}" lipservice \
    && useradd --system --uid "${UID}" --gid lipservice --no-create-home \
       --home-dir /var/lib/lipservice --shell /usr/sbin/nologin lipservice \
    && install -d -o lipservice -g lipservice -m 0750 /var/lib/lipservice
COPY --from=build /opt/lipservice /opt/lipservice
COPY docker/config.yaml /etc/lipservice/config.yaml
COPY policies/ /etc/lipservice/policies/
ENV PATH=/opt/lipservice/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER ${UID}:${UID}
WORKDIR /var/lib/lipservice
VOLUME ["/var/lib/lipservice"]
EXPOSE 4317 4318 8888
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8888/healthz', timeout=4)"]
ENTRYPOINT ["lipservice-proxy", "run"]
CMD ["-c", "/etc/lipservice/config.yaml"]
