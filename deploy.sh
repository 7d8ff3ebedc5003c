#!/usr/bin/env bash
# One command for operators: deploy, preview, status, rollback, resume and logs of a stack.
# Run `./deploy.sh --help` for usage. `--dry-run` prints the commands without running them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
DRY_RUN=0
YES=0
EMERGENCY=0

usage() {
  cat <<'USAGE'
Usage: ./deploy.sh [--dry-run] [--yes] COMMAND [ARGS] [STACK]

Commands (STACK is dev or production; default dev):
  deploy [STACK]                     pulumi up (asks for confirmation unless --yes)
  preview [STACK]                    pulumi preview --diff
  status [STACK]                     every workload's released image (its release file,
                                     offline); with pulumi and kubectl: nodes, pods not
                                     ready, Argo CD's sync and health per workload and
                                     whether the released image runs, GPU allocation
  rollback STACK WORKLOAD            an app rollback is a git revert: reverts the last
                                     commit that changed releases/STACK/WORKLOAD.yaml and
                                     pushes it to the release branch. argocd delivery:
                                     Argo CD rolls it out by itself; helm delivery: the
                                     next `pulumi up` of STACK does. A second rollback
                                     reverts the revert (rolls forward again).
  rollback --emergency SERVICE REVISION [STACK]
                                     outside git, when a revert cannot wait; shows the
                                     stack's update history first.
                                     argocd delivery: records the rollback in the stack
                                     config (sophia:argocd.rollbacks.SERVICE in
                                     Pulumi.STACK.yaml: commit it), turns the app's
                                     auto-sync off and rolls back to ArgoCD history id
                                     REVISION; later `pulumi up`s keep it rolled back
                                     until `resume`.
                                     helm delivery: `helm rollback` to Helm revision
                                     REVISION; the next `pulumi up` that upgrades the
                                     release re-applies the release file.
  resume SERVICE [STACK]             end an emergency rollback (argocd delivery): clears
                                     sophia:argocd.rollbacks.SERVICE (commit
                                     Pulumi.STACK.yaml) and turns auto-sync back on
  logs SERVICE [STACK]               the service's logs (last 200 lines, then follow)

Options:
  --dry-run    print the commands instead of running them (read-only git and the
               offline stack config are still read, to name the commit and service)
  --yes        do not ask before `pulumi up`
  --emergency  rollback outside git (see rollback above)
  -h, --help   this text
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
      echo "deploy.sh: '$tool' is not installed or not on PATH; install it (see docs/operating.md, 'A first deployment')" >&2
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

have() {
  command -v "$1" >/dev/null 2>&1
}

cmd_status() {
  local stack="${1:-dev}"
  check_stack "$stack"
  # What is released (the release files), readable without any cluster access.
  run "$PYTHON" -m sophia_infra describe --stack "$stack"
  if [[ $DRY_RUN -eq 0 ]] && ! { have pulumi && have kubectl; }; then
    note "pulumi or kubectl is not installed: showing the release files only (install both for the cluster's view)"
    return 0
  fi
  with_kubeconfig "$stack"
  local k=(kubectl --kubeconfig "$KUBECONFIG_FILE")
  local delivery
  delivery="$(sed -n 's/^delivery=//p' <<<"$(describe "$stack" backend 2>/dev/null || true)")"
  run "${k[@]}" get nodes -o wide -L gpu-type
  run "${k[@]}" get pods --all-namespaces --field-selector=status.phase!=Running,status.phase!=Succeeded
  if [[ "$delivery" != "helm" ]]; then
    # Argo CD's view next to the release files: synced, healthy, and is the released image running?
    if [[ $DRY_RUN -eq 1 ]]; then
      printf '+ %s | %s\n' "$(printf '%q ' "${k[@]}" get applications.argoproj.io --namespace argocd -o json | sed 's/ $//')" \
        "$(printf '%q ' "$PYTHON" -m sophia_infra describe --stack "$stack" --applications - | sed 's/ $//')"
    else
      "${k[@]}" get applications.argoproj.io --namespace argocd -o json \
        | "$PYTHON" -m sophia_infra describe --stack "$stack" --applications -
    fi
  fi
  run "${k[@]}" get nodes \
    -o 'custom-columns=NODE:.metadata.name,GPU_TYPE:.metadata.labels.gpu-type,GPU_CAPACITY:.status.capacity.nvidia\.com/gpu,GPU_ALLOCATABLE:.status.allocatable.nvidia\.com/gpu'
  run "${k[@]}" get pods --all-namespaces --field-selector=status.phase=Running \
    -o 'custom-columns=NAMESPACE:.metadata.namespace,POD:.metadata.name,NODE:.spec.nodeName,GPU:.spec.containers[*].resources.limits.nvidia\.com/gpu'
}

cmd_rollback() {
  if [[ $EMERGENCY -eq 1 ]]; then
    cmd_emergency_rollback "$@"
    return
  fi
  local stack="${1:-}" workload="${2:-}"
  [[ -n "$stack" && -n "$workload" && $# -eq 2 ]] || die "rollback needs STACK and WORKLOAD (a git revert), or --emergency SERVICE REVISION [STACK] (see --help)"
  check_stack "$stack"
  local facts file branch commit
  facts="$(describe "$stack" "$workload")" || die "no workload '$workload' in stack '$stack'"
  file="$(sed -n 's/^releaseFile=//p' <<<"$facts")"
  branch="$(sed -n 's/^releaseBranch=//p' <<<"$facts")"
  need git
  run git -C "$ROOT" pull --ff-only origin "$branch"
  # Read-only, so also under --dry-run: the commit to revert.
  commit="$(git -C "$ROOT" log -1 --format=%H -- "$file")"
  [[ -n "$commit" ]] || die "no commit has changed $file yet: there is nothing to roll back"
  # A clone without history (--depth) cannot tell the last release from the file's creation.
  [[ "$(git -C "$ROOT" rev-parse --is-shallow-repository)" != "true" ]] \
    || die "this clone is shallow, so it lacks the release history of $file; run git fetch --unshallow, then roll back again"
  [[ "$(git -C "$ROOT" rev-list --count "$commit" -- "$file")" -gt 1 ]] \
    || die "$file has only its first version: nothing to roll back to (release another with python -m sophia_infra release $workload --stack $stack --tag TAG)"
  local others count shown
  others="$(git -C "$ROOT" show --format= --name-only "$commit" | grep -vxF "$file" || true)"
  if [[ -n "$others" ]]; then
    count="$(grep -c '' <<<"$others")"
    shown="$(head -n 3 <<<"$others" | paste -sd ' ' -)"
    [[ $count -le 3 ]] || shown+=" ..."
    die "commit ${commit:0:12} changes $count other file(s) besides $file ($shown); revert by hand what should go"
  fi
  note "rolling back $workload in $stack: reverting $(git -C "$ROOT" log -1 --format='%h %s' "$commit")"
  run git -C "$ROOT" revert --no-edit "$commit"
  run git -C "$ROOT" push origin "HEAD:$branch"
  if [[ "$(sed -n 's/^delivery=//p' <<<"$facts")" == "argocd" ]]; then
    note "Argo CD rolls the reverted $file out by itself once it is on $branch; watch it with ./deploy.sh status $stack."
  else
    note "run ./deploy.sh deploy $stack to roll the reverted $file out (helm delivery)."
  fi
}

cmd_emergency_rollback() {
  local service="${1:-}" revision="${2:-}" stack="${3:-dev}"
  [[ -n "$service" && -n "$revision" ]] || die "rollback --emergency needs SERVICE and REVISION (see --help)"
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
    note "auto-sync of '$service' stays off while sophia:argocd.rollbacks.$service is set; commit and push Pulumi.$stack.yaml now (a \`pulumi up\` from a checkout without it turns auto-sync back on), and run ./deploy.sh resume $service $stack once a fixed release is out (or ./deploy.sh rollback $stack $service has reverted the bad one)."
  else
    need helm
    with_kubeconfig "$stack"
    run helm --kubeconfig "$KUBECONFIG_FILE" history "$service" --namespace "$namespace" --max 10
    run helm --kubeconfig "$KUBECONFIG_FILE" rollback "$service" "$revision" --namespace "$namespace" --wait
    note "the next \`pulumi up\` that upgrades the '$service' release re-applies releases/$stack/$service.yaml; ./deploy.sh rollback $stack $service (a git revert) keeps the old version."
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
  note "auto-sync of '$service' is on again and syncs it to the chart at its version tag (sophia-service-VERSION) and releases/$stack/$service.yaml on sophia:argocd.releaseBranch; commit and push Pulumi.$stack.yaml."
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
      --emergency) EMERGENCY=1 ;;
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
