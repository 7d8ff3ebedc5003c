#!/usr/bin/env bash
# One command for operators: deploy, preview, status, rollback, resume and logs of a stack.
# Run `./deploy.sh --help` for usage. `--dry-run` prints the commands without running them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
DRY_RUN=0
YES=0

usage() {
  cat <<'USAGE'
Usage: ./deploy.sh [--dry-run] [--yes] COMMAND [ARGS] [STACK]

Commands (STACK is dev or production; default dev):
  deploy [STACK]                     pulumi up (asks for confirmation unless --yes)
  preview [STACK]                    pulumi preview --diff
  status [STACK]                     nodes, pods not ready, ArgoCD application health,
                                     GPU allocation per node
  rollback SERVICE REVISION [STACK]  roll one service back; shows the stack's update
                                     history first.
                                     argocd delivery: records the rollback in the stack
                                     config (sophia:argocd.rollbacks.SERVICE in
                                     Pulumi.STACK.yaml: commit it), turns the app's
                                     auto-sync off and rolls back to ArgoCD history id
                                     REVISION; later `pulumi up`s keep it rolled back
                                     until `resume`.
                                     helm delivery: `helm rollback` to Helm revision
                                     REVISION; the next `pulumi up` that upgrades the
                                     release re-applies the stack's values.
  resume SERVICE [STACK]             end a rollback (argocd delivery): clears
                                     sophia:argocd.rollbacks.SERVICE (commit
                                     Pulumi.STACK.yaml) and turns auto-sync back on
  logs SERVICE [STACK]               the service's logs (last 200 lines, then follow)

Options:
  --dry-run   print the commands instead of running them
  --yes       do not ask before `pulumi up`
  -h, --help  this text
USAGE
}

die() {
  echo "deploy.sh: $*" >&2
  exit 2
}

# What the operator must do next (also under --dry-run), on stderr.
note() {
  echo "deploy.sh: $*" >&2
}

# Print a command (quoted) under --dry-run; run it otherwise.
run() {
  if [[ $DRY_RUN -eq 1 ]]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

need() {
  [[ $DRY_RUN -eq 1 ]] && return 0
  local tool
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "deploy.sh: '$tool' is not installed or not on PATH; install it (see README, 'Running it for real')" >&2
      exit 127
    fi
  done
}

check_stack() {
  [[ -f "$ROOT/Pulumi.$1.yaml" ]] || die "unknown stack '$1': there is no Pulumi.$1.yaml"
}

# Facts about a service from the stack config (offline): namespace, delivery.
describe() {
  "$PYTHON" -m sophia_infra describe --stack "$1" "$2"
}

KUBECONFIG_FILE=""
with_kubeconfig() {
  local stack="$1"
  if [[ $DRY_RUN -eq 1 ]]; then
    KUBECONFIG_FILE="<kubeconfig of $stack>"
    run pulumi stack output kubeconfig --show-secrets --stack "$stack"
    return 0
  fi
  KUBECONFIG_FILE="$(mktemp)"
  trap 'rm -f "$KUBECONFIG_FILE"' EXIT
  chmod 0600 "$KUBECONFIG_FILE"
  pulumi stack output kubeconfig --show-secrets --stack "$stack" > "$KUBECONFIG_FILE"
}

cmd_deploy() {
  local stack="${1:-dev}"
  check_stack "$stack"
  need pulumi
  if [[ $YES -eq 1 ]]; then
    run pulumi up --stack "$stack" --yes
  else
    run pulumi up --stack "$stack"
  fi
}

cmd_preview() {
  local stack="${1:-dev}"
  check_stack "$stack"
  need pulumi
  run pulumi preview --stack "$stack" --diff
}

cmd_status() {
  local stack="${1:-dev}"
  check_stack "$stack"
  need pulumi kubectl
  with_kubeconfig "$stack"
  local k=(kubectl --kubeconfig "$KUBECONFIG_FILE")
  run "${k[@]}" get nodes -o wide -L gpu-type
  run "${k[@]}" get pods --all-namespaces --field-selector=status.phase!=Running,status.phase!=Succeeded
  run "${k[@]}" get applications.argoproj.io --namespace argocd \
    -o custom-columns=APP:.metadata.name,SYNC:.status.sync.status,HEALTH:.status.health.status,REVISION:.status.sync.revision
  run "${k[@]}" get nodes \
    -o 'custom-columns=NODE:.metadata.name,GPU_TYPE:.metadata.labels.gpu-type,GPU_CAPACITY:.status.capacity.nvidia\.com/gpu,GPU_ALLOCATABLE:.status.allocatable.nvidia\.com/gpu'
  run "${k[@]}" get pods --all-namespaces --field-selector=status.phase=Running \
    -o 'custom-columns=NAMESPACE:.metadata.namespace,POD:.metadata.name,NODE:.spec.nodeName,GPU:.spec.containers[*].resources.limits.nvidia\.com/gpu'
}

cmd_rollback() {
  local service="${1:-}" revision="${2:-}" stack="${3:-dev}"
  [[ -n "$service" && -n "$revision" ]] || die "rollback needs SERVICE and REVISION (see --help)"
  [[ "$revision" =~ ^[0-9]+$ ]] || die "REVISION must be a number (an ArgoCD history id or a Helm revision), not '$revision'"
  check_stack "$stack"
  need pulumi kubectl
  local facts namespace delivery
  facts="$(describe "$stack" "$service")" || die "no service '$service' in stack '$stack'"
  namespace="$(sed -n 's/^namespace=//p' <<<"$facts")"
  delivery="$(sed -n 's/^delivery=//p' <<<"$facts")"
  run pulumi stack history --stack "$stack" --page-size 5
  if [[ "$delivery" == "argocd" ]]; then
    need argocd
    # Recorded first: with it the program renders this Application without automated sync,
    # so the next `pulumi up` keeps the rollback (ArgoCD refuses one while auto-sync is on).
    run pulumi config set --path "sophia:argocd.rollbacks.$service" "$revision" --stack "$stack"
    run argocd app set "argocd/$service" --sync-policy none
    run argocd app history "argocd/$service"
    run argocd app rollback "argocd/$service" "$revision"
    note "auto-sync of '$service' stays off while sophia:argocd.rollbacks.$service is set; commit and push Pulumi.$stack.yaml now (a \`pulumi up\` from a checkout without it turns auto-sync back on), and run ./deploy.sh resume $service $stack once a fixed release is out."
  else
    need helm
    with_kubeconfig "$stack"
    run helm --kubeconfig "$KUBECONFIG_FILE" history "$service" --namespace "$namespace" --max 10
    run helm --kubeconfig "$KUBECONFIG_FILE" rollback "$service" "$revision" --namespace "$namespace" --wait
    note "the next \`pulumi up\` that upgrades the '$service' release re-applies the stack's values; change them in Pulumi.$stack.yaml to keep this version."
  fi
}

cmd_resume() {
  local service="${1:-}" stack="${2:-dev}"
  [[ -n "$service" ]] || die "resume needs SERVICE (see --help)"
  check_stack "$stack"
  need pulumi
  local facts delivery
  facts="$(describe "$stack" "$service")" || die "no service '$service' in stack '$stack'"
  delivery="$(sed -n 's/^delivery=//p' <<<"$facts")"
  [[ "$delivery" == "argocd" ]] || die "stack '$stack' delivers with helm, where nothing pauses: a Helm rollback lasts until \`./deploy.sh deploy $stack\` next upgrades the release"
  need argocd
  run pulumi config rm --path "sophia:argocd.rollbacks.$service" --stack "$stack"
  # The same policy the program renders without a rollback, so `pulumi up` finds nothing to undo.
  run argocd app set "argocd/$service" --sync-policy automated --auto-prune --self-heal
  note "auto-sync of '$service' is on again and syncs it to sophia:argocd.targetRevision; commit and push Pulumi.$stack.yaml."
}

cmd_logs() {
  local service="${1:-}" stack="${2:-dev}"
  [[ -n "$service" ]] || die "logs needs SERVICE (see --help)"
  check_stack "$stack"
  need pulumi kubectl
  local facts namespace
  facts="$(describe "$stack" "$service")" || die "no service '$service' in stack '$stack'"
  namespace="$(sed -n 's/^namespace=//p' <<<"$facts")"
  with_kubeconfig "$stack"
  run kubectl --kubeconfig "$KUBECONFIG_FILE" logs --namespace "$namespace" "deployment/$service" \
    --all-containers --tail=200 --follow
}

main() {
  local args=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1 ;;
      --yes) YES=1 ;;
      -*) die "unknown option '$1' (see --help)" ;;
      *) args+=("$1") ;;
    esac
    shift
  done
  [[ ${#args[@]} -gt 0 ]] || { usage >&2; exit 2; }
  local command="${args[0]}"
  local rest=("${args[@]:1}")
  case "$command" in
    deploy) cmd_deploy "${rest[@]}" ;;
    preview) cmd_preview "${rest[@]}" ;;
    status) cmd_status "${rest[@]}" ;;
    rollback) cmd_rollback "${rest[@]}" ;;
    resume) cmd_resume "${rest[@]}" ;;
    logs) cmd_logs "${rest[@]}" ;;
    *) die "unknown command '$command' (see --help)" ;;
  esac
}

main "$@"
