#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine, and nothing twice:
# system packages (apt-get), a virtual environment in .venv, the project with its extras.
# Called by `make run` and `make test`; safe to run again at any time.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${EXTRAS:-dev}"
PYTHON="${PYTHON:-python3}"

# espeak-ng + sox make test speech. Apertium APy is the default translator of the
# captions, with the Debian language pairs that connect English, Spanish, French,
# Catalan, Portuguese and Italian (directly or through /translateChain). Adding a pair:
# add its package here (apt-cache search apertium). chromium (with a font for its
# screenshots) runs the browser tests. The rest of the stack comes as wheels.
APT_PACKAGES=(
    espeak-ng sox
    apertium-apy
    apertium-eng-spa apertium-eng-cat apertium-fr-es apertium-fra-cat apertium-spa-cat
    apertium-es-pt apertium-spa-ita apertium-por-cat apertium-cat-ita
    chromium fonts-dejavu-core
)
# The web client is built with Node.js and npm: Debian's, unless some are already installed.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    APT_PACKAGES+=(nodejs npm)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing system packages: ${missing[*]}"
    if [[ $(id -u) -eq 0 ]]; then
        SUDO=""
    elif command -v sudo >/dev/null; then
        SUDO="sudo"
    else
        echo "bootstrap: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
    echo "bootstrap: creating .venv"
    "$PYTHON" -m venv .venv
fi

# Re-install only when the project definition changed since the last install.
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${EXTRAS}"
if [[ ! -f "$stamp" ]]; then
    echo "bootstrap: installing the project with extras [${EXTRAS}]"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi

# Node.js 18 or newer builds the web client (esbuild, TypeScript).
node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 18)); then
    echo "bootstrap: Node.js 18 or newer is needed to build the web client (found $(node --version))" >&2
    exit 1
fi
