#!/usr/bin/env bash
# The test command: installs what the end-to-end tests need (the official Codex CLI and the
# official OpenAI Python SDK, both pinned; Debian's Chromium and playwright-core to drive it),
# then runs every test of the workspace, and the gateway's end-to-end tests once more on the
# legacy epoll driver (the first run uses io_uring where the kernel allows it).
set -euo pipefail
cd "$(dirname "$0")/.."

CODEX_VERSION=0.169.0
E2E_DIR=.e2e

if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: installing Node.js" >&2
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "cannot install Node.js here: install Node.js 20+ and npm, then rerun" >&2
    exit 1
  fi
fi

codex="$E2E_DIR/node_modules/.bin/codex"
if ! [ -x "$codex" ] || ! "$codex" --version 2>/dev/null | grep -q "$CODEX_VERSION"; then
  echo "installing @openai/codex@$CODEX_VERSION into $E2E_DIR" >&2
  mkdir -p "$E2E_DIR"
  npm install --no-audit --no-fund --silent --prefix "$E2E_DIR" "@openai/codex@$CODEX_VERSION"
fi
export CODEX_LB_CODEX_BIN="$PWD/$codex"

# Headless Chromium for the dashboard test: the distribution's browser, never a downloaded one,
# driven by playwright-core (pinned).
PLAYWRIGHT_VERSION=1.65.1
if ! [ -x /usr/bin/chromium ]; then
  echo "chromium not found: installing Debian's chromium" >&2
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "cannot install Chromium here: install it at /usr/bin/chromium (or set CODEX_LB_CHROMIUM), then rerun" >&2
    exit 1
  fi
fi
pw="$E2E_DIR/node_modules/playwright-core/package.json"
if ! [ -f "$pw" ] || ! grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$pw"; then
  echo "installing playwright-core@$PLAYWRIGHT_VERSION into $E2E_DIR" >&2
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent --prefix "$E2E_DIR" "playwright-core@$PLAYWRIGHT_VERSION"
fi

# The official OpenAI Python SDK, pinned, in a virtualenv of its own.
OPENAI_PY_VERSION=3.57.0
venv="$E2E_DIR/venv"
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "python3 with venv not found: installing it" >&2
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3 python3-venv >/dev/null
  else
    echo "cannot install Python here: install python3 with the venv module, then rerun" >&2
    exit 1
  fi
fi
if ! [ -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_PY_VERSION')" 2>/dev/null; then
  echo "installing openai==$OPENAI_PY_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "openai==$OPENAI_PY_VERSION"
fi
export CODEX_LB_PYTHON="$PWD/$venv/bin/python"

cargo test --workspace --all-targets
# Same package selection as above, so nothing is rebuilt for the second pass.
CODEX_LB_TEST_DRIVER=legacy cargo test --workspace --tests
