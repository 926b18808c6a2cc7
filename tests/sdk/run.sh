#!/usr/bin/env bash
# End-to-end tests with the official OpenAI, Anthropic and Google GenAI Python SDKs as clients: builds Ferry and the mock
# provider, installs the SDK into a venv, and runs pytest (which starts and stops both).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --workspace --bins
venv=${FERRY_SDK_VENV:-target/sdk-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check openai anthropic google-genai pytest
export FERRY_BIN="$PWD/target/debug/ferry" FERRY_MOCK_BIN="$PWD/target/debug/ferry-mock"
exec "$venv/bin/python" -m pytest -q tests/sdk "$@"
