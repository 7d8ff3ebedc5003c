"""What each consuming system accepts, one check per kind of value.

Every value of the stack configuration ends up in something with its own grammar: a K3s
flag, a Kubernetes field, a Helm release name, a ufw rule, an S3 endpoint, a cron line.
The checks here say, per kind, what that consumer accepts, with `re.fullmatch` semantics
throughout (`re.match("^...$")` lets a final newline through, since `$` also matches
before it). Each check returns the value or raises ValueError with one sentence saying
what is accepted; the schema (config.py and its settings modules) uses them as field
validators, so the sentence is reported under the key path that holds the value.

Values are shown with `show()`: escaped (a newline reads `\\n`) and cut short, so a
message stays one line. Values of secret config keys are never shown (config.py redacts).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Callable, Iterable, Optional, Union
from urllib.parse import urlsplit

from pydantic import AfterValidator, StrictInt

# ----------------------------------------------------------------------------- limits

DNS_LABEL_MAX = 63          # RFC 1123 label: Kubernetes object names of most kinds
DNS_SUBDOMAIN_MAX = 253     # RFC 1123 subdomain: label prefixes, class names
HELM_RELEASE_MAX = 53       # Helm 3 refuses longer release names
LABEL_NAME_MAX = 63         # the name part of a label key, and a label value
IMAGE_TAG_MAX = 128         # Docker's reference grammar
CNPG_CLUSTER_NAME_MAX = 50  # CloudNativePG's webhook (room for -rw, -ro, -1-initdb, ...)
PG_IDENTIFIER_MAX = 63      # PostgreSQL NAMEDATALEN - 1
INTERFACE_NAME_MAX = 15     # Linux IFNAMSIZ - 1
LOGIN_NAME_MAX = 32         # useradd's limit (and utmp's)
INT32_MAX = 2**31 - 1       # replicas, ports, counts in the Kubernetes API are int32
MAX_REPLICAS = 1000         # a sane bound below int32: more is a typo, not a plan

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_LABEL = re.compile(_LABEL)
_DNS_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_HOST_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(\.{_HOST_LABEL})*\.?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_K3S_VERSION = re.compile(r"v\d+\.\d+\.\d+(-rc\d+)?\+k3s\d+")
_SEMVER = re.compile(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
_IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
# Docker's reference grammar: [registry[:port]/]path, path components lower-case.
_REPO_COMPONENT = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*"
_IMAGE_REPOSITORY = re.compile(
    rf"({_HOST_LABEL}(\.{_HOST_LABEL})*(:[0-9]{{1,5}})?/)?{_REPO_COMPONENT}(/{_REPO_COMPONENT})*")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_LOGIN_NAME = re.compile(r"[a-z_][a-z0-9_-]*")  # useradd's default NAME_REGEX, without the trailing $
_SECRET_KEY = re.compile(r"[a-z][A-Za-z0-9]*")
_PG_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_INTERFACE = re.compile(r"[A-Za-z0-9_.:-]+")
_URL_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3_REGION = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_S3_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]+")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def show(value: object, limit: int = 60) -> str:
    """A value for a one-line message: quoted, control characters escaped, cut short."""
    text = str(value).encode("unicode_escape").decode("ascii")
    return "'" + (text if len(text) <= limit else text[:limit] + "...") + "'"


def _fail(value: object, what: str) -> ValueError:
    return ValueError(f"{show(value)} is not {what}")


# ----------------------------------------------------------------------------- names

def is_dns_label(value: str, limit: int = DNS_LABEL_MAX) -> bool:
    return len(value) <= limit and bool(_DNS_LABEL.fullmatch(value))


def is_dns_subdomain(value: str, limit: int = DNS_SUBDOMAIN_MAX) -> bool:
    return len(value) <= limit and bool(_DNS_SUBDOMAIN.fullmatch(value))


def dns_label(value: str, what: str, limit: int = DNS_LABEL_MAX) -> str:
    """A Kubernetes object name that must be an RFC 1123 label (nodes, namespaces)."""
    if not is_dns_label(value, limit):
        raise _fail(value, f"a valid {what}; use at most {limit} lower-case letters, digits and '-', "
                           "starting and ending with a letter or digit (a DNS-1123 label)")
    return value


def dns1035_label(value: str, what: str, limit: int = DNS_LABEL_MAX) -> str:
    """A Kubernetes Service name (and CNPG cluster name): an RFC 1035 label, a letter first."""
    if len(value) > limit or not _DNS1035.fullmatch(value):
        raise _fail(value, f"a valid {what}; use at most {limit} lower-case letters, digits and '-', "
                           "starting with a letter and ending with a letter or digit (a DNS-1035 label)")
    return value


def dns_subdomain(value: str, what: str, limit: int = DNS_SUBDOMAIN_MAX) -> str:
    """A Kubernetes name that may be a dotted subdomain (IngressClass, StorageClass)."""
    if not is_dns_subdomain(value, limit):
        raise _fail(value, f"a valid {what}; use lower-case letters, digits, '-' and '.', at most {limit} "
                           "characters, each part starting and ending with a letter or digit (a DNS-1123 subdomain)")
    return value


def service_name(value: str) -> str:
    """A workload's name: its Service (DNS-1035) and its Helm release (at most 53)."""
    return dns1035_label(value, "service name (it names a Kubernetes Service and a Helm release)", HELM_RELEASE_MAX)


def label_key(key: str) -> str:
    """A Kubernetes label (or taint) key: [DNS-subdomain prefix/]name, name at most 63."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and not is_dns_subdomain(prefix):
        raise _fail(key, "a label key; its prefix (before '/') must be a DNS subdomain such as example.com")
    if len(name) > LABEL_NAME_MAX or not _LABEL_NAME.fullmatch(name):
        raise _fail(key, f"a label key; the name (after any prefix/) takes at most {LABEL_NAME_MAX} letters, "
                         "digits, '-', '_' and '.', starting and ending with a letter or digit")
    return key


def label_value(value: str) -> str:
    """A Kubernetes label (or taint) value: empty, or at most 63 of [A-Za-z0-9-_.]."""
    if value and (len(value) > LABEL_NAME_MAX or not _LABEL_NAME.fullmatch(value)):
        raise _fail(value, f"a label value; use at most {LABEL_NAME_MAX} letters, digits, '-', '_' and '.', "
                           "starting and ending with a letter or digit")
    return value


def taint(value: str) -> str:
    """A K3s node-taint: key[=value]:Effect, key and value as Kubernetes labels."""
    body, sep, effect = value.rpartition(":")
    key, _, val = body.partition("=")
    try:
        if not sep or effect not in TAINT_EFFECTS or not key:
            raise ValueError
        label_key(key)
        label_value(val)
    except ValueError:
        raise _fail(value, "a taint; write it as key=value:NoSchedule (or PreferNoSchedule, NoExecute), "
                           "key and value as Kubernetes labels") from None
    return value


def login_name(value: str) -> str:
    """A Linux user name as useradd accepts it by default (the SSH user of the hosts)."""
    if not value.strip():
        raise ValueError("is empty, and the hosts are set up over SSH as that user; set the hosts' login user "
                         "(e.g. ubuntu) in the ESC environment's sophia.infrastructure.ssh_user")
    if len(value) > LOGIN_NAME_MAX or not _LOGIN_NAME.fullmatch(value):
        raise _fail(value, f"a Linux user name; use at most {LOGIN_NAME_MAX} lower-case letters, digits, '_' and '-', "
                           "starting with a letter or '_' (e.g. ubuntu)")
    return value


# OpenSSH public key types (ssh-keygen -t, sshd's PubkeyAcceptedAlgorithms defaults).
SSH_PUBLIC_KEY = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
                            r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,2}( [^\n]*)?")


def ssh_public_key(value: str) -> str:
    """One OpenSSH public key line (type, base64 material, optional comment)."""
    if not SSH_PUBLIC_KEY.fullmatch(value.strip()):
        # Never echo it: a private key pasted here by mistake must not reach a log.
        raise ValueError("is not an OpenSSH public key; give one line as ssh-keygen writes it to the .pub file "
                         "(ssh-ed25519 AAAA... comment)")
    return value.strip()


def env_var_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise _fail(value, "an environment variable name; use upper-case letters, digits and '_', not a digit first")
    return value


def secret_key_name(value: str) -> str:
    if not _SECRET_KEY.fullmatch(value):
        raise _fail(value, "a config key; name a secret config key such as openaiApiKey")
    return value


def postgres_identifier(value: str, what: str) -> str:
    """A PostgreSQL role or database name CNPG's initdb takes without quoting."""
    if len(value) > PG_IDENTIFIER_MAX or not _PG_IDENTIFIER.fullmatch(value):
        raise _fail(value, f"a PostgreSQL {what} name; use at most {PG_IDENTIFIER_MAX} lower-case letters, "
                           "digits and '_', not a digit first")
    return value


def interface_name(value: str) -> str:
    if len(value) > INTERFACE_NAME_MAX or not _INTERFACE.fullmatch(value):
        raise _fail(value, f"a network interface name; Linux takes at most {INTERFACE_NAME_MAX} letters, "
                           "digits, '-', '_', '.' and ':' (e.g. eth1)")
    return value


# ----------------------------------------------------------------------------- versions

def k3s_version(value: str) -> str:
    if not _K3S_VERSION.fullmatch(value):
        raise _fail(value, "a pinned K3s release; use an exact version such as v1.34.2+k3s1")
    return value


def chart_version(value: str) -> str:
    # Some charts publish their versions with a "v" (cert-manager's v1.21.1): still exact.
    if not _SEMVER.fullmatch(value.removeprefix("v")):
        raise _fail(value, "a pinned chart version; use an exact version such as 1.2.3")
    return value


def image_tag(value: str) -> str:
    """A pinned image tag (Docker's grammar, at most 128 characters, never latest) or digest."""
    if value == "latest" or not (_IMAGE_TAG.fullmatch(value) or _DIGEST.fullmatch(value)):
        raise _fail(value, "a pinned image tag; use an exact version tag (letters, digits, '_', '.', '-', "
                           f"at most {IMAGE_TAG_MAX}) or a sha256 digest, never 'latest' or a range")
    return value


def image_repository(value: str) -> str:
    if len(value) > 255 or not _IMAGE_REPOSITORY.fullmatch(value):
        raise _fail(value, "an image repository; write it like docker.io/org/name (lower-case path, no tag)")
    return value


# ----------------------------------------------------------------------------- addresses

def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def is_hostname(value: str) -> bool:
    """A DNS name (RFC 1123 host names, at most 253 characters); a dotted quad is not one."""
    if len(value) > DNS_SUBDOMAIN_MAX or re.fullmatch(r"[0-9.]+", value):
        return False
    return bool(_HOSTNAME.fullmatch(value))


def is_address(value: str) -> bool:
    """An IP address or a DNS name."""
    return is_ip(value) or is_hostname(value)


def unusable_ip(value: str) -> Optional[str]:
    """Why an IP address cannot be a host's address (None if it can, or if it is no IP)."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    for flag, why in (("is_unspecified", "the unspecified address"), ("is_loopback", "a loopback address"),
                      ("is_multicast", "a multicast address"), ("is_link_local", "a link-local address")):
        if getattr(ip, flag):
            return why
    return None


def host_address(value: str) -> str:
    """A node's address: an IP a peer can reach, or a DNS name."""
    if not is_address(value):
        raise ValueError(f"{show(value)} is neither an IP address nor a DNS name; give the host's IP address or DNS name")
    why = unusable_ip(value)
    if why:
        raise ValueError(f"{show(value)} is {why}, which no other host can reach; give the host's routable IP address")
    return value


def url_host(addr: str) -> str:
    """`addr` as the host part of a URL: an IPv6 address in brackets (RFC 3986)."""
    return f"[{addr}]" if ":" in addr and is_ip(addr) else addr


def port_number(value: int, what: str = "port") -> int:
    if isinstance(value, bool) or not 1 <= value <= 65535:
        raise ValueError(f"{value} is not a {what}; use a number from 1 to 65535")
    return value


def s3_endpoint(value: str) -> str:
    """K3s's etcd-s3-endpoint: host[:port], no scheme; an IPv6 address in brackets."""
    port: Optional[str] = None
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        ok_host = ":" in host and is_ip(host)
        if rest:
            ok_host = ok_host and rest.startswith(":")
            port = rest[1:]
    else:
        host, sep, rest = value.partition(":")
        ok_host = is_address(host)
        port = rest if sep else None
    ok_port = port is None or (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535)
    if not (ok_host and ok_port):
        raise _fail(value, "host[:port] of an S3-compatible endpoint; give its DNS name and, if not 443, "
                           "a port from 1 to 65535, without https://")
    return value


def url(value: str, schemes: tuple[str, ...] = ("https",), what: str = "URL") -> str:
    """A URL with one of `schemes`, a valid host and port, no whitespace or control characters."""
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a port that is no number or out of range
        host = parts.hostname or ""
    except ValueError:
        parts, port, host = None, None, ""
    if (parts is None or parts.scheme not in schemes or not is_address(host)
            or re.search(r"[\s\x00-\x1f\x7f]", value) or port == 0):
        raise _fail(value, f"an {' or '.join(schemes)} {what}; write it like {schemes[0]}://host[:port]/path")
    return value


def url_has_credentials(value: str) -> bool:
    """user:password@ or token@ in an http(s) URL, or a password in an ssh:// URL."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    if parts.scheme in ("http", "https"):
        return parts.username is not None or parts.password is not None
    return parts.password is not None


def url_path(value: str, what: str = "path") -> str:
    """An absolute URL path (probes, metrics): '/', then RFC 3986 path characters only."""
    if len(value) > 1024 or not _URL_PATH.fullmatch(value):
        raise _fail(value, f"an HTTP {what}; start it with '/' and use only URL path characters "
                           "(no spaces, quotes, '#', '?' or line breaks)")
    return value


def ingress_host(value: str) -> str:
    """An Ingress rule host: a lower-case DNS name with a dot, not an IP address."""
    if is_ip(value) or "." not in value or not is_dns_subdomain(value):
        raise _fail(value, "a DNS host name; give a fully qualified lower-case host such as argocd.example.com, "
                           "or leave it out")
    return value


def network(value: str, what: str = "network in CIDR form", example: str = "10.42.0.0/16") -> str:
    try:
        ipaddress.ip_network(value)
    except ValueError:
        raise _fail(value, f"a {what}; write it like {example}") from None
    return value


Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def overlapping(named: Iterable[tuple[str, Network]]) -> list[tuple[str, str]]:
    """Pairs of (name, name) whose networks overlap."""
    items = list(named)
    return [(a, b) for i, (a, na) in enumerate(items) for b, nb in items[i + 1:]
            if na.version == nb.version and na.overlaps(nb)]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- S3

def s3_bucket(value: str) -> str:
    if not _S3_BUCKET.fullmatch(value) or ".." in value or is_ip(value):
        raise _fail(value, "an S3 bucket name; use 3 to 63 lower-case letters, digits, '-' and '.'")
    return value


def s3_region(value: str) -> str:
    if len(value) > 63 or not _S3_REGION.fullmatch(value):
        raise _fail(value, "an S3 region; write it like us-east-1")
    return value


def s3_prefix(value: str) -> str:
    if len(value) > 1024 or not _S3_PREFIX.fullmatch(value):
        raise _fail(value, "an S3 folder; use letters, digits and !_.*'()/- only")
    return value


# ----------------------------------------------------------------------------- cron

_CRON_FIELDS = (("minute", 0, 59, None), ("hour", 0, 23, None), ("day of month", 1, 31, None),
                ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
                ("day of week", 0, 6, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")))
_SECOND = ("second", 0, 59, None)


def _cron_number(text: str, field: str, lo: int, hi: int, names: Optional[tuple[str, ...]]) -> int:
    if names and text.lower() in names:
        return names.index(text.lower()) + lo
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{field} {show(text)} is not a number")
    n = int(text)
    if not lo <= n <= hi:
        raise ValueError(f"{field} {n} is outside {lo}-{hi}")
    return n


def _cron_field(text: str, field: str, lo: int, hi: int, names: Optional[tuple[str, ...]]) -> None:
    for item in text.split(","):
        base, slash, step = item.partition("/")
        if slash:
            if not (step.isascii() and step.isdigit()) or not 1 <= int(step) <= hi - lo + 1:
                raise ValueError(f"{field} step {show(step)} is not a number from 1 to {hi - lo + 1}")
        if base == "*" or (base == "?" and field.startswith("day")):
            continue
        first, dash, last = base.partition("-")
        a = _cron_number(first, field, lo, hi, names)
        if dash and _cron_number(last, field, lo, hi, names) < a:
            raise ValueError(f"{field} range {show(base)} runs backwards")


def cron(value: str, seconds: bool = False) -> str:
    """A cron schedule as robfig/cron parses it (K3s: 5 fields; CNPG: 6, seconds first):
    numbers in range, names for months and weekdays, lists, ranges and steps."""
    fields = ((_SECOND,) if seconds else ()) + _CRON_FIELDS
    shape = ("second " if seconds else "") + "minute hour day-of-month month day-of-week"
    example = "0 0 3 * * *" if seconds else "0 */6 * * *"
    parts = value.split(" ")
    try:
        if re.search(r"[^\x20-\x7e]", value):
            raise ValueError("it contains a line break, a tab or another control character")
        if len(value.split()) != len(fields):
            raise ValueError(f"it has {len(value.split())} fields, not {len(fields)}")
        if len(parts) != len(fields):
            raise ValueError("separate the fields by single spaces")
        for text, (field, lo, hi, names) in zip(parts, fields):
            _cron_field(text, field, lo, hi, names)
    except ValueError as why:
        raise ValueError(f"{show(value)} is not a {len(fields)}-field cron schedule ({shape}): {why}; "
                         f"write it like {example}") from None
    return value


# ----------------------------------------------------------------------------- as pydantic types

def checked(check: Callable[..., object], *args: object) -> AfterValidator:
    """A pydantic AfterValidator running `check(value, *args)` (which raises ValueError)."""
    def run(value):
        check(value, *args)
        return value
    return AfterValidator(run)


NodeName = Annotated[str, checked(dns_label, "node name")]
ServiceName = Annotated[str, checked(service_name)]
ClassName = Annotated[str, checked(dns_subdomain, "class name")]
Cron5 = Annotated[str, checked(cron)]
Cron6 = Annotated[str, checked(cron, True)]
Port = Annotated[StrictInt, checked(port_number)]
HttpsUrl = Annotated[str, checked(url)]
UrlPath = Annotated[str, checked(url_path)]
