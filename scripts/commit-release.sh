#!/usr/bin/env bash
# Commits a release file and delivers it: pushes it to the release branch (MODE=direct) or opens
# a pull request with auto-merge (MODE=pull-request). Run by release.yml in a checkout of this
# repository after `python -m sophia_infra release` wrote releases/STACK/WORKLOAD.yaml.
#
# Usage: scripts/commit-release.sh STACK WORKLOAD TAG
# Environment: MODE (direct | pull-request; default direct), BRANCH (default main),
# APP_REPOSITORY and APP_SHA (named in the commit body), GH_TOKEN for gh (pull-request mode).
# Exit 0 when the release is on its way or was already released, 1 when the push failed.
set -euo pipefail

stack="${1:?usage: commit-release.sh STACK WORKLOAD TAG}"
workload="${2:?usage: commit-release.sh STACK WORKLOAD TAG}"
tag="${3:?usage: commit-release.sh STACK WORKLOAD TAG}"
mode="${MODE:-direct}"
branch="${BRANCH:-main}"
file="releases/$stack/$workload.yaml"

case "$mode" in
  direct|pull-request) ;;
  *) echo "::error::mode must be direct or pull-request, not $mode" >&2; exit 1 ;;
esac
[[ -f "$file" ]] || { echo "::error::$file does not exist: run python -m sophia_infra release first" >&2; exit 1; }

# Staged, so a workload's first release (an untracked file) counts as a change too.
git add -- "$file"
if git diff --cached --quiet -- "$file"; then
  echo "$workload in $stack already runs $tag: nothing to commit"
  exit 0
fi

git config user.name "sophia-release[bot]"
git config user.email "sophia-release[bot]@users.noreply.github.com"
message="release($stack): $workload $tag"
body="Built from ${APP_REPOSITORY:-an app repository}@${APP_SHA:-unknown}. Roll back with ./deploy.sh rollback $stack $workload."

if [[ "$mode" == "pull-request" ]]; then
  head="release/$stack/$workload/$tag"
  git switch --quiet --create "$head"
  git commit --quiet -m "$message" -m "$body" -- "$file"
  git push --quiet --force origin "$head"
  gh pr create --base "$branch" --head "$head" --title "$message" --body "$body"
  gh pr merge "$head" --auto --squash
  exit 0
fi

git commit --quiet -m "$message" -m "$body" -- "$file"
# One file per workload: a concurrent release of another workload rebases cleanly.
for attempt in 1 2 3; do
  if git push --quiet origin "HEAD:$branch"; then
    echo "released $workload $tag to $stack: $(git rev-parse HEAD) on $branch"
    exit 0
  fi
  echo "push attempt $attempt failed; rebasing on $branch"
  git pull --quiet --rebase origin "$branch"
done
echo "::error::could not push the release of $workload to $branch after 3 attempts" >&2
exit 1
