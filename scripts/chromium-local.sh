#!/usr/bin/env bash
# Debian's chromium for the browser test (tests/test_trackers.py: the MLflow UI over an exported
# sweep). Root; a no-op where chromium is already installed. .ci/run calls it.
set -euo pipefail
command -v chromium >/dev/null && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium
