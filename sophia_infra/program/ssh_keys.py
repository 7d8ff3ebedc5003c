"""The hosts' SSH keys: the public half of the ESC private key, and the one file that says
which keys may log in as the SSH user.

The stack owns `~<sshUser>/.ssh/authorized_keys` on every host: it holds exactly the public
half of the key the stack connects with (`sophia:sshPrivateKey`) plus `sophia:sshAuthorizedKeys`.
A rotation is two `pulumi up`s, and no host is replaced (docs/operating.md, "Rotating the SSH
key"): first the new public key goes into `sshAuthorizedKeys` (the stack still connects with the
old key and authorizes the new one), then ESC gets the new private key and the list loses the
new public key (the stack connects with the new key; the old one is no longer authorized).
"""

from __future__ import annotations

import hashlib
import shlex
from typing import Any, Optional, Sequence

import pulumi

from sophia_infra.program.config.validators import SSH_PUBLIC_KEY

BEGIN = "# sophia-infra: authorized keys (managed: sophia:sshPrivateKey's public half and sophia:sshAuthorizedKeys)"


def is_public_key(line: str) -> bool:
    return bool(SSH_PUBLIC_KEY.fullmatch(line))


def public_key_of(private_key: str) -> str:
    """The OpenSSH public key of an OpenSSH or PEM private key (without passphrase)."""
    if private_key.startswith("placeholder-"):
        # The offline plan runs on ESC's placeholders, which are not keys: a stand-in derived
        # from it, so that the plan's command text never carries the secret's value.
        import base64

        return "ssh-ed25519 " + base64.b64encode(hashlib.sha256(private_key.encode()).digest()).decode() + " placeholder"
    from cryptography.hazmat.primitives import serialization

    data = private_key.encode()
    try:
        try:
            key: Any = serialization.load_ssh_private_key(data, password=None)
        except ValueError:
            key = serialization.load_pem_private_key(data, password=None)
        return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()
    except (ValueError, TypeError, AttributeError):
        raise pulumi.RunError("sophia:sshPrivateKey: is not an OpenSSH or PEM private key without a passphrase, so "
                              "its public key cannot be derived; store the unencrypted private key in ESC "
                              "(sophia.infrastructure.lambda_labs.ssh_private_key).") from None


def fingerprint(public_key: str) -> str:
    """A short, stable name part for a public key (its type and material, not its comment)."""
    material = " ".join(public_key.split()[:2])
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def authorized_keys(connecting_key: str, extra: Sequence[str]) -> list[str]:
    """The keys the file holds: the one the stack connects with first, then the others, once each."""
    out: list[str] = []
    for key in (connecting_key, *extra):
        material = " ".join(key.split()[:2])
        if material not in (" ".join(k.split()[:2]) for k in out):
            out.append(key.strip())
    return out


def authorized_keys_script(user: str, keys: Sequence[str], home: Optional[str] = None) -> str:
    """As root: make `user`'s authorized_keys hold exactly `keys` (0600, owned by the user, in a
    0700 .ssh), replacing the file atomically; nothing when it already does. `home`: the user's
    home directory (default: from the passwd database)."""
    text = "\n".join([BEGIN, *keys]) + "\n"
    u = shlex.quote(user)
    where = f"home={shlex.quote(home)}" if home else \
        f"home=\"$(getent passwd {u} | cut -d: -f6)\"\n[ -n \"$home\" ] || {{ echo \"no user {user} on this host\" >&2; exit 1; }}"
    return f"""set -euo pipefail
umask 077
{where}
dir="$home/.ssh"
file="$dir/authorized_keys"
want={shlex.quote(text)}
if [ -f "$file" ] && [ "$(cat "$file")" = "${{want%$'\\n'}}" ]; then
  echo "authorized keys unchanged"
  exit 0
fi
mkdir -p "$dir"
chmod 0700 "$dir"
tmp="$(mktemp "$dir/.authorized_keys.XXXXXX")"
printf '%s' "$want" > "$tmp"
chmod 0600 "$tmp"
chown {u}: "$dir" "$tmp" 2>/dev/null || true
mv -f "$tmp" "$file"
echo "authorized keys written ({len(keys)} key(s))"
"""
