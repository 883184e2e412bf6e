# The Python image for every massive-fetcher part (simulator, producer, consumer, backfill);
# compose.yaml runs it as `massive-fetcher <part>`, with the config docker/entrypoint.sh picks.
#
# Layers from the least to the most often changed, so a code change rebuilds only the last
# ones: the compiler (build stage) and the pinned dependencies are cached.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# gcc builds the compiled hot paths (schemas/_native.c) into the wheel; it stays in this stage.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 app \
    && mkdir -p /var/lib/massive-fetcher /etc/massive-fetcher/local \
    && chown app /var/lib/massive-fetcher
WORKDIR /app

# The project's requirements from its metadata, before any code, so a code change does not
# reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY --from=build /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels
# The compiled hot paths are required here: a wheel built without them fails the build
# (and any container started from an image that lacks them), not runs several times slower.
ENV MASSIVE_FETCHER_REQUIRE_NATIVE=1
RUN python -c "import schemas.native"
COPY docker/entrypoint.sh /usr/local/bin/massive-fetcher-entrypoint

USER app
# The simulator (WS + REST), then the metrics/health ports of producer, consumer, backfill.
EXPOSE 8765 9101 9102 9103
ENTRYPOINT ["massive-fetcher-entrypoint"]
CMD ["massive-fetcher", "--help"]
