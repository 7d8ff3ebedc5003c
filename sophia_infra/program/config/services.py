"""Config schema of the services and ArgoCD (`sophia:argocd`, `sophia:workloads`).

`sophia:argocd` (ArgoCDSettings) configures the GitOps delivery used when
`sophia:delivery` is `argocd`; `sophia:workloads` (WorkloadSettings) holds the options of
the platform's own workloads that apply in both delivery modes. Every field has a default,
so stack files that set neither key validate unchanged.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import Field, StrictInt, field_validator

from sophia_infra.program.config.chart_revision import chart_tag
from sophia_infra.program.config import validators as check
from sophia_infra.program.config.models import Resources, Strict

if TYPE_CHECKING:
    from sophia_infra.program.config.stack import StackConfig

# A git branch name (git check-ref-format, simplified): what the release files are read from.
_BRANCH = re.compile(r"^(?!.*\.\.)(?!.*//)(?!.*\.lock$)[A-Za-z0-9_][A-Za-z0-9._/-]*(?<![./])$")
_SSH_URL = re.compile(r"^(ssh://|git@)")

# Secret config keys (ESC, fn::secret) of the repository credentials Argo CD reads this repo with.
REPO_CREDENTIAL_SECRETS = {
    "sshKey": {"sshPrivateKey": "argocdRepoSshKey"},
    "githubApp": {"githubAppID": "argocdGithubAppId", "githubAppInstallationID": "argocdGithubAppInstallationId",
                  "githubAppPrivateKey": "argocdGithubAppPrivateKey"},
    "none": {},
}

ARGOCD_CHART = "argo-cd"


def _host(v: Optional[str]) -> Optional[str]:
    return None if v is None else check.ingress_host(v)


class ArgoCDSettings(Strict):
    """`sophia:argocd`: the Argo CD install and where Applications take the chart from."""

    # The git repository that holds charts/sophia-service (this repository).
    repo_url: str = Field(default="https://github.com/sophia-ai/sophia-infra.git", alias="repoUrl")
    # Derived, not chosen: Applications read charts/sophia-service at the tag of its version,
    # sophia-service-<Chart.yaml version> (sophia_infra.program.config.chart_revision), which the deploy
    # workflow creates (`python -m sophia_infra chart-tag --push`). Left unset; a value other
    # than that tag is refused.
    target_revision: Optional[str] = Field(default=None, alias="targetRevision")
    # The branch the workloads' release files (releases/<stack>/<name>.yaml) are read from: an
    # app release is a commit there, which Argo CD rolls out by itself (a second, `ref: values`
    # source of every Application). The chart stays at targetRevision.
    release_branch: str = Field(default="main", alias="releaseBranch")
    # How Argo CD authenticates to repoUrl: a GitHub App (https URL), a read-only deploy key
    # (SSH URL), or none (a public repository). The secrets come from ESC
    # (REPO_CREDENTIAL_SECRETS) into a repository Secret in the argocd namespace.
    repo_credentials: Literal["githubApp", "sshKey", "none"] = Field(default="githubApp", alias="repoCredentials")
    # Dex (SSO) is off unless an identity provider is configured.
    dex: bool = False
    # Host name of an Argo CD UI Ingress behind NGINX; no Ingress when unset.
    ingress_host: Optional[str] = Field(default=None, alias="ingressHost")
    # Create the `argocd` namespace in Services (off: the platform layer creates it, with its
    # Pod Security labels, quota and network policies; turn on only without that layer).
    create_namespace: bool = Field(default=False, alias="createNamespace")
    # admin.passwordMtime of argocd-secret: set it to the rotation time when the hash changes
    # (Argo CD rejects tokens issued before it). Fixed, so that runs do not differ.
    admin_password_mtime: str = Field(default="2026-01-01T00:00:00Z", alias="adminPasswordMtime")
    # Rollbacks in force: service -> the Argo CD history id it was rolled back to (or a reason).
    # Those Applications are rendered without automated sync, so a later `pulumi up` keeps the
    # rollback. `./deploy.sh rollback` records an entry, `./deploy.sh resume` removes it.
    rollbacks: dict[str, str] = Field(default_factory=dict)

    @field_validator("repo_url")
    @classmethod
    def _repo(cls, v: str) -> str:
        # Never echoed: a URL with a credential in it is the thing refused here.
        if check.url_has_credentials(v):
            raise ValueError("the URL carries a credential (user:password@ or token@), which would be written in plain text into "
                             "every Application; remove it and let Argo CD read the repository with the repository Secret from ESC")
        if v.startswith("git@"):
            ok = bool(re.fullmatch(r"git@[A-Za-z0-9.-]+:[A-Za-z0-9._/-]+", v)) and check.is_hostname(v[4:].split(":")[0])
        else:
            try:
                ok = bool(check.url(v, ("https", "ssh"), "git repository URL"))
            except ValueError:
                ok = False
        if not ok:
            raise ValueError(f"{check.show(v)} is not a git repository URL; use https://host/org/repo.git or git@host:org/repo.git")
        return v

    @field_validator("release_branch")
    @classmethod
    def _branch(cls, v: str) -> str:
        if v.upper() == "HEAD" or re.fullmatch(r"[0-9a-f]{40}", v) or not _BRANCH.fullmatch(v):
            raise ValueError(f"'{v}' is not a branch name; give the branch app releases are committed to, such as main")
        return v

    @field_validator("admin_password_mtime")
    @classmethod
    def _mtime(cls, v: str) -> str:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", v):
            raise ValueError(f"{check.show(v)} is not an RFC 3339 UTC time; write it like 2026-01-01T00:00:00Z")
        return v

    @field_validator("ingress_host")
    @classmethod
    def _ingress_host(cls, v: Optional[str]) -> Optional[str]:
        return _host(v)

    @field_validator("rollbacks", mode="before")
    @classmethod
    def _rollback_ids(cls, v: Any) -> Any:
        # `pulumi config set --path 'sophia:argocd.rollbacks.backend' 3` stores the number 3.
        if isinstance(v, dict):
            return {k: str(x) if isinstance(x, int) and not isinstance(x, bool) else x for k, x in v.items()}
        return v

    @field_validator("rollbacks")
    @classmethod
    def _rollbacks(cls, v: dict[str, str]) -> dict[str, str]:
        for name, why in v.items():
            if not why.strip():
                raise ValueError(f"the rollback of '{name}' is empty; give the Argo CD history id it was rolled back to (or a reason), or remove it with ./deploy.sh resume {name}")
        return v


class WorkloadSettings(Strict):
    """`sophia:workloads`: options of backend, frontend and the MCP servers (both delivery modes)."""

    # Pull images with the Docker Hub credentials of ESC (dockerUsername, dockerAccessToken).
    # On by default: the credentials are in both ESC environments, and authenticated pulls
    # avoid Docker Hub's anonymous rate limit on nodes that share a public address.
    private_images: bool = Field(default=True, alias="privateImages")
    registry_server: str = Field(default="https://index.docker.io/v1/", alias="registryServer")
    # Host name of the frontend's Ingress behind NGINX; no Ingress when unset.
    frontend_host: Optional[str] = Field(default=None, alias="frontendHost")
    ingress_class: check.ClassName = Field(default="nginx", alias="ingressClass")
    # HTTP readiness/liveness path of the apps (MCP servers are probed over TCP).
    health_paths: dict[str, str] = Field(default_factory=lambda: {"backend": "/health", "frontend": "/"}, alias="healthPaths")
    # Per-service overrides of the default requests and limits.
    resources: dict[str, Resources] = Field(default_factory=dict)
    # HPA CPU target.
    target_cpu_utilization: StrictInt = Field(default=70, ge=10, le=100, alias="targetCpuUtilization")

    @field_validator("frontend_host")
    @classmethod
    def _frontend_host(cls, v: Optional[str]) -> Optional[str]:
        return _host(v)

    @field_validator("health_paths")
    @classmethod
    def _paths(cls, v: dict[str, str]) -> dict[str, str]:
        for name, path in v.items():
            try:
                check.url_path(path, "probe path")
            except ValueError as why:
                raise ValueError(f"the health path of '{name}': {why}") from None
        return v

    @field_validator("registry_server")
    @classmethod
    def _registry(cls, v: str) -> str:
        return check.url(v, ("https",), "registry URL")


def workloads(cfg: "StackConfig") -> WorkloadSettings:
    """The stack's WorkloadSettings (defaults until `sophia:workloads` is part of StackConfig)."""
    return getattr(cfg, "workloads", None) or WorkloadSettings()


def required_secrets(cfg: "StackConfig") -> dict[str, str]:
    """Secret config key -> what needs it."""
    needed: dict[str, str] = {}
    if cfg.delivery == "argocd":
        needed["argocdAdminPasswordBcrypt"] = "sophia:delivery (argocd: the admin password's bcrypt hash)"
        mode = cfg.argocd.repo_credentials
        for key in REPO_CREDENTIAL_SECRETS[mode].values():
            needed[key] = f"sophia:argocd.repoCredentials ({mode}: Argo CD's read access to sophia:argocd.repoUrl)"
    if cfg.services and workloads(cfg).private_images:
        needed["dockerUsername"] = "sophia:workloads.privateImages (image pull Secret)"
        needed["dockerAccessToken"] = "sophia:workloads.privateImages (image pull Secret)"
    return needed


def cross_check(cfg: "StackConfig") -> list[str]:
    """Problems that span sophia:services, sophia:argocd and other keys, one sentence each."""
    problems: list[str] = []
    argo = cfg.argocd
    if cfg.delivery == "argocd":
        rev = argo.target_revision
        if rev is not None and rev != (tag := chart_tag()):
            problems.append(f"sophia:argocd.targetRevision: {rev!r} is not {tag}, the tag of the chart version in charts/sophia-service/Chart.yaml that Argo CD must read for the values this program writes; remove the key (pulumi config rm --path sophia:argocd.targetRevision), the program derives it.")
        url_is_ssh = bool(_SSH_URL.match(argo.repo_url))
        if argo.repo_credentials == "sshKey" and not url_is_ssh:
            problems.append(f"sophia:argocd.repoCredentials: sshKey (a deploy key) needs an SSH repoUrl, but sophia:argocd.repoUrl is '{argo.repo_url}'; write it as git@github.com:ORG/REPO.git, or use repoCredentials: githubApp.")
        if argo.repo_credentials == "githubApp" and url_is_ssh:
            problems.append(f"sophia:argocd.repoCredentials: githubApp needs an https repoUrl, but sophia:argocd.repoUrl is '{argo.repo_url}'; write it as https://github.com/ORG/REPO.git, or use repoCredentials: sshKey.")
        if ARGOCD_CHART not in cfg.charts:
            problems.append(f"sophia:charts.{ARGOCD_CHART}: sophia:delivery is argocd but no {ARGOCD_CHART} chart is pinned; add {ARGOCD_CHART}: {{repository: https://argoproj.github.io/argo-helm, version: 10.1.1}}.")
    for i, svc in enumerate(cfg.services):
        if svc.port < 1024:
            problems.append(f"sophia:services[{i}].port: {svc.port} is a privileged port, which a non-root container without capabilities cannot bind; use a port from 1024 up (8000 by default).")
    w = workloads(cfg)
    names = {s.name for s in cfg.services}
    for name in sorted(set(w.resources) | set(w.health_paths)):
        if name not in names and name not in ("backend", "frontend"):
            problems.append(f"sophia:workloads: '{name}' is not a service of sophia:services; remove it or correct its spelling.")
    for name in sorted(argo.rollbacks):
        if name not in names:
            problems.append(f"sophia:argocd.rollbacks.{name}: there is no service '{name}' in sophia:services; remove the entry (pulumi config rm --path 'sophia:argocd.rollbacks.{name}') or correct its spelling.")
    if argo.rollbacks and cfg.delivery != "argocd":
        problems.append("sophia:argocd.rollbacks: this stack delivers with helm (sophia:delivery), which has no auto-sync to pause (roll back with ./deploy.sh rollback SERVICE REVISION STACK); remove it with pulumi config rm --path sophia:argocd.rollbacks.")
    if w.frontend_host and "frontend" not in names:
        problems.append("sophia:workloads.frontendHost: there is no service named 'frontend'; remove frontendHost or add the frontend service.")
    return problems
