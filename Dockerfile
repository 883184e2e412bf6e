# The Python image for every massive-fetcher part (simulator, producer, consumer, backfill);
# compose.yaml runs it with `massive-fetcher <part> --config /etc/massive-fetcher/config.yaml`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (pinned in pyproject.toml), so a code change does not reinstall them:
# install the project's requirements from its metadata with a stub tree, then the code.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# gcc builds the compiled hot paths (schemas/_native.c), then leaves the image again;
# without it the build would still succeed, on the slower pure-Python path.
COPY . .
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-deps . \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 app \
    && mkdir -p /var/lib/massive-fetcher /etc/massive-fetcher \
    && chown app /var/lib/massive-fetcher

USER app
# Simulator (WS + REST), then the metrics/health ports of producer, consumer, backfill.
EXPOSE 8765 9101 9102 9103 9104
CMD ["massive-fetcher", "--help"]
