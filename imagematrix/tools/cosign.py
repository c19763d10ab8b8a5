"""cosign: the one place that runs it (signatures and in-toto attestations on image digests in a registry).

Key-based here: a cosign key pair (`cosign generate-key-pair`), the private key given as a file and its password in
COSIGN_PASSWORD (never on a command line, never printed). Keyless signing (Fulcio + Rekor through the CI's OIDC
identity) is what GitHub Actions uses; it needs those services, which this machine cannot reach, so the transparency
log is off for key-based signing (`--tlog-upload=false`) and verification does not ask for it.
A registry on loopback speaks plain HTTP: cosign is told so (`--allow-http-registry`).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

from imagematrix.model.errors import RuntimeFailure

INSTALL_DIR = Path("/usr/local/bin")


def find() -> str | None:
    return shutil.which("cosign")


def require() -> str:
    found = find()
    if not found:
        raise RuntimeFailure("cosign is not installed: run `python build.py setup` (it installs Debian trixie's "
                             "cosign package)")
    return found


def _http_flags(ref: str) -> list[str]:
    host = ref.split("/", 1)[0]
    loopback = host.startswith(("127.", "localhost")) or host == "[::1]"
    return ["--allow-http-registry", "--allow-insecure-registry"] if loopback else []


def _run(args: list[str], *, password: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COSIGN_YES": "true"}
    if password is not None:
        env["COSIGN_PASSWORD"] = password
    try:
        return subprocess.run([require(), *args], capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"`cosign {args[0]}` did not finish within {timeout:.0f} s") from None


def _check(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise RuntimeFailure(f"{what}: {lines[-1] if lines else f'cosign exited {proc.returncode}'}")
    return proc


def generate_key_pair(directory: Path, password: str) -> tuple[Path, Path]:
    """cosign.key and cosign.pub in directory (tests, and `build.py sign --new-key`)."""
    directory.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "COSIGN_PASSWORD": password}
    proc = subprocess.run([require(), "generate-key-pair"], cwd=directory, capture_output=True, text=True, env=env)
    _check(proc, "cosign generate-key-pair")
    return directory / "cosign.key", directory / "cosign.pub"


def public_key(key: Path, password: str, dest: Path) -> Path:
    """The public key of a private key file, written to dest (promote checks what build signed with the same key)."""
    _check(_run(["public-key", "--key", str(key), "--outfile", str(dest)], password=password),
           f"cosign public-key --key {key}")
    return dest


def sign(ref: str, key: Path, password: str) -> None:
    """Sign the image digest ref (name@sha256:...)."""
    _check(_run(["sign", "--key", str(key), "--tlog-upload=false", *_http_flags(ref), ref], password=password),
           f"cosign sign {ref}")


def attest(ref: str, predicate: Path, predicate_type: str, key: Path, password: str) -> None:
    """Attach an in-toto attestation (the predicate file, of cosign's predicate type) to the digest, signed."""
    _check(_run(["attest", "--key", str(key), "--tlog-upload=false", "--type", predicate_type,
                 "--predicate", str(predicate), *_http_flags(ref), ref], password=password),
           f"cosign attest --type {predicate_type} {ref}")


def verify(ref: str, pub: Path) -> None:
    """The image's signature checks out against the public key (RuntimeFailure with cosign's reason otherwise)."""
    _check(_run(["verify", "--key", str(pub), "--insecure-ignore-tlog=true", *_http_flags(ref), ref]),
           f"signature of {ref}")


def verify_attestation(ref: str, pub: Path, predicate_type: str) -> list[dict]:
    """The verified in-toto statements of that type attached to ref (decoded), newest last."""
    proc = _check(_run(["verify-attestation", "--key", str(pub), "--insecure-ignore-tlog=true", "--type",
                        predicate_type, *_http_flags(ref), ref]), f"{predicate_type} attestation of {ref}")
    statements = []
    for line in proc.stdout.splitlines():
        if not line.strip():
            continue
        envelope = json.loads(line)
        statements.append(json.loads(base64.b64decode(envelope["payload"])))
    return statements
