# tickets: the API served by `tickets serve` (migrations run first, then N workers).
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# DejaVu Sans for the ticket PDFs: guests' names in Latin, Greek or Cyrillic script print as written
# (without it the PDFs fall back to Helvetica, Latin-1 only).
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY README.md ./
COPY src ./src
RUN pip install --no-deps . \
 && useradd --system --create-home --uid 10001 tickets \
 && mkdir -p /data && chown tickets /data

USER tickets
WORKDIR /data
ENV DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["tickets", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
