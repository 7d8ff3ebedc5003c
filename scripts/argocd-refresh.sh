#!/usr/bin/env bash
# Asks Argo CD to refresh workloads' Applications now instead of at its next poll (every 120 s
# plus up to 60 s of jitter), so an auto-synced release or rollback starts rolling out at once.
# A refresh needs only `get` on the Application. A failed refresh leaves the poll to do it,
# so it warns and still exits 0.
#
# Usage: ARGOCD_TOKEN=... scripts/argocd-refresh.sh SERVER WORKLOAD...
# SERVER is Argo CD's host (https is assumed) or a URL.
set -euo pipefail

server="${1:?usage: argocd-refresh.sh SERVER WORKLOAD...}"
shift
[[ "$server" == *://* ]] || server="https://$server"
: "${ARGOCD_TOKEN:?ARGOCD_TOKEN is not set}"

for workload in "$@"; do
  if [[ ! "$workload" =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]]; then
    echo "::warning::'$workload' is not a workload name; not refreshed"
    continue
  fi
  # The token goes through a file descriptor, not the command line other processes can read.
  if curl --fail --silent --show-error --max-time 30 --output /dev/null \
      --header @<(printf 'Authorization: Bearer %s\n' "$ARGOCD_TOKEN") \
      "$server/api/v1/applications/$workload?appNamespace=argocd&refresh=normal"; then
    echo "asked Argo CD to refresh $workload"
  else
    echo "::warning::could not ask Argo CD to refresh $workload; it rolls the change out at its next poll (within 3 minutes)"
  fi
done
