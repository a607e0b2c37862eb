# One image for every service; compose.yaml picks the entry point per container:
# python -m gateway | gateway.selector | gateway.archive | media_node | transcriber |
# translator_bridge.

# The web client the gateway serves at / (built once, copied in as static files).
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/build.mjs web/tsconfig.json ./
COPY web/src ./src
RUN npx tsc --noEmit -p tsconfig.json && npm run build

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p schemas gateway media_node transcriber translator_bridge devstack \
    && pip install ".[gateway,media-node,transcriber,translator-bridge]" \
    && pip uninstall -y meeshy-calls

COPY schemas ./schemas
COPY gateway ./gateway
COPY media_node ./media_node
COPY transcriber ./transcriber
COPY translator_bridge ./translator_bridge
COPY devstack ./devstack
RUN pip install --no-deps .
COPY --from=web /web/dist ./web/dist
ENV WEB_CLIENT_DIR=/app/web/dist

# A home of its own: the transcriber assembles its bundled base model under
# XDG_CACHE_HOME (~/.cache), which a --system user without a home could not write.
RUN useradd --system --uid 10001 --create-home --home-dir /home/meeshy meeshy
ENV HOME=/home/meeshy XDG_CACHE_HOME=/home/meeshy/.cache
USER meeshy
# 8000: the gateway (REST, Socket.IO, web client); 9100: /metrics of every service.
EXPOSE 8000 9100
# Each container overrides this with its own service module.
CMD ["python", "-m", "gateway"]
