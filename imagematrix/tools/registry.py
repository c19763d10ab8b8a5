"""Read image labels from a registry over the Distribution HTTP API, with the credentials of the docker config.

Credentials come from where `docker login` puts them: `$DOCKER_CONFIG/config.json` (default `~/.docker`), either
inline (`auths.<host>.auth`) or through a credential helper (`credHelpers` / `credsStore`). Basic and bearer-token
challenges are answered. Loopback registries are spoken to over HTTP (as docker does), all others over HTTPS.
No credential is ever put into a message or a log.

A Bearer challenge names its token service (the realm): it is asked only over http(s) (https when the registry is),
with the docker config's credentials only when it is on the registry's own host and port (or is the registry's
known token host, AUTH_HOSTS), anonymously otherwise. Every answer (manifests, configs, tokens) is read through
tools/http.fetch, with a size cap and a deadline for the whole request (their values are in tools/http.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from imagematrix.model import secrets
from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import http

MANIFEST_MEDIA = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
))
INDEX_MEDIA = "application/vnd.docker.distribution.manifest.list.v2+json"  # what docker push writes: its images' kind
DOCKER_HUB = "https://index.docker.io/v1/"
# Token services that live on another host than their registry and are its own: the only other hosts the
# registry's credentials go to (Docker Hub's registry-1.docker.io sends clients to auth.docker.io).
AUTH_HOSTS = {"registry-1.docker.io": "auth.docker.io"}
# A bearer token as it goes into a header: printable ASCII, no space, no CR/LF (JWTs and opaque tokens alike)
TOKEN_RE = re.compile(r"[\x21-\x7e]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}
DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")  # the OCI descriptor's digest grammar


def split(repository: str) -> tuple[str, str]:
    """'host[:port]/ns/name' -> (host, 'ns/name'); a name without a registry host is on Docker Hub."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return "registry-1.docker.io", repository if "/" in repository else f"library/{repository}"


def is_loopback(host: str) -> bool:
    return host.split(":")[0] in ("127.0.0.1", "localhost", "::1")


def docker_config_dir() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def credentials(host: str) -> tuple[str, str] | None:
    """(user, secret) for host from the docker config, or None."""
    path = docker_config_dir() / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(f"cannot read the docker config {path}: {exc}") from None
    keys = [host, f"https://{host}", f"http://{host}"] + ([DOCKER_HUB] if host.endswith("docker.io") else [])
    helper = next((config.get("credHelpers", {}).get(k) for k in keys if k in config.get("credHelpers", {})),
                  config.get("credsStore"))
    for key in keys:
        entry = config.get("auths", {}).get(key) or {}
        if entry.get("auth"):
            # a hand-edited or truncated entry must not end in a traceback (nor echo the secret)
            try:
                user, colon, secret = base64.b64decode(entry["auth"]).decode().partition(":")
            except (TypeError, ValueError):  # binascii.Error and UnicodeDecodeError are ValueErrors
                colon = ""
            if not colon:
                raise RuntimeFailure(f"docker config {path}: auth for {host} is not base64 user:password; "
                                     f"fix: docker login {host}")
            return user, secret
    if helper:
        for key in keys:
            proc = subprocess.run([f"docker-credential-{helper}", "get"], input=key, capture_output=True, text=True)
            if proc.returncode == 0:
                try:
                    found = json.loads(proc.stdout)
                    return found.get("Username", ""), found.get("Secret", "")
                except (ValueError, AttributeError):
                    raise RuntimeFailure(f"docker-credential-{helper} answered something other than a JSON object "
                                         f"for {host}; fix: docker login {host}") from None
    return None


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, int]:
    return (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS[parts.scheme.lower()]


def _shown(realm: str) -> str:
    """A realm as a message may quote it: one line, at most 200 characters, user info redacted."""
    return secrets.redact_text(repr(realm[:200]))


def token_service(base: str, realm: str | None) -> tuple[str, bool]:
    """The token service a Bearer challenge of the registry at `base` (scheme://host[:port]) names, checked:
    (realm, whether the docker config's credentials may go to it). Raises ValueError saying why the realm is no
    place to ask: none given; not a whole http(s) URL (file:, data:, ftp:, a path, spaces or control characters, user
    info, a fragment, a bad port); plain http while the registry is https (the credentials would travel in clear).
    Credentials go along only when the realm is on the registry's host and port, or on its known token host."""
    if not realm:
        raise ValueError("its Bearer challenge names no token service (no realm)")
    if not re.fullmatch(r"[\x21-\x7e]+", realm):
        raise ValueError(f"its Bearer realm {_shown(realm)} is not a URL (spaces or control characters)")
    parts, registry_parts = urllib.parse.urlsplit(realm), urllib.parse.urlsplit(base)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"its Bearer realm {_shown(realm)} is not an http(s) URL")
    if not parts.hostname:
        raise ValueError(f"its Bearer realm {_shown(realm)} names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"its Bearer realm {_shown(realm)} carries user info")
    if "#" in realm:
        raise ValueError(f"its Bearer realm {_shown(realm)} has a fragment (#)")
    try:
        origin = _origin(parts)
    except ValueError:
        raise ValueError(f"its Bearer realm {_shown(realm)} has an invalid port") from None
    if registry_parts.scheme.lower() == "https" and scheme != "https":
        raise ValueError(f"its Bearer realm {_shown(realm)} is plain http while the registry is https "
                         "(the token service must be https too)")
    own = origin == _origin(registry_parts) or (
        scheme == "https" and parts.port in (None, 443)
        and parts.hostname.lower() == AUTH_HOSTS.get((registry_parts.hostname or "").lower()))
    return realm, own


class Client:
    """A minimal client for one registry host: it reads, retags and puts multi-arch indexes (no blob uploads)."""

    def __init__(self, host: str):
        self.host = host
        self.base = f"{'http' if is_loopback(host) else 'https'}://{host}"
        self._auth: str | None = None

    def request(self, method: str, path: str, *, accept: str | None = None, data: bytes | None = None,
                content_type: str | None = None, sink=None) -> tuple[bytes, dict] | None:
        """One request to base+path; None on 404. Answers one auth challenge with the docker config's credentials.
        The answer (a manifest or an image config) is read with http.MANIFEST_LIMIT and http.MANIFEST_DEADLINE; with
        `sink` (a blob) it is given to sink chunk by chunk, within http.BLOB_LIMIT, BLOB_DEADLINE and BLOB_IDLE."""
        limits = ({"limit": http.MANIFEST_LIMIT, "deadline": http.MANIFEST_DEADLINE} if sink is None else
                  {"limit": http.BLOB_LIMIT, "deadline": http.BLOB_DEADLINE, "idle": http.BLOB_IDLE, "sink": sink})
        for attempt in (1, 2):
            headers = {k: v for k, v in (("Accept", accept), ("Content-Type", content_type)) if v}
            req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
            if self._auth:
                # never re-sent on a redirect: registries (ghcr.io, ECR, GCR) redirect blob reads to a storage host,
                # which must not receive the registry's token (and rejects the extra header)
                req.add_unredirected_header("Authorization", self._auth)
            try:
                answer = http.fetch(req, **limits)
                return answer.body, dict(answer.headers)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                if exc.code == 401 and attempt == 1:
                    self._authenticate(exc.headers.get("WWW-Authenticate", ""))
                    continue
                if exc.code in (401, 403):
                    raise RuntimeFailure(
                        f"registry {self.host} refused {method} {path} ({exc.code}): "
                        f"log in with `docker login {self.host}` (credentials are read from "
                        f"{docker_config_dir() / 'config.json'})") from None
                raise RuntimeFailure(f"registry {self.host}: HTTP {exc.code} for {method} {path}") from None
            except http.Refused as exc:
                raise RuntimeFailure(f"registry {self.host}: {method} {path}: {exc}") from None
            except OSError as exc:
                raise RuntimeFailure(f"registry {self.host} is unreachable ({self.base}): {http.why(exc)}; "
                                     "check the address, or start the embedded registry with "
                                     "`python build.py setup`") from None
            except ValueError as exc:  # http.client refused the URL or a header (a CR/LF in a token)
                raise RuntimeFailure(f"registry {self.host}: {method} {path} not sent: {http.why(exc)}") from None
        raise AssertionError("unreachable")

    def get_json(self, path: str, accept: str | None = None) -> dict | None:
        """The JSON object at path; None on 404. Anything else (an HTML page from a proxy, a list) is a failure."""
        answer = self.request("GET", path, accept=accept)
        if answer is None:
            return None
        try:
            found = json.loads(answer[0])
        except (ValueError, RecursionError):  # UnicodeDecodeError included; RecursionError: JSON nested too deep
            found = None
        if not isinstance(found, dict):
            raise RuntimeFailure(f"registry {self.host}: GET {path} answered {answer[0][:60]!r}, not a JSON object; "
                                 f"check that {self.base} is a registry (not a proxy or a login page)")
        return found

    def _authenticate(self, challenge: str) -> None:
        creds = credentials(self.host)
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if not creds:
                raise RuntimeFailure(f"registry {self.host} needs credentials: run `docker login {self.host}`")
            self._auth = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            return
        if scheme.lower() != "bearer":
            raise RuntimeFailure(f"registry {self.host} asks for unsupported authentication {scheme!r}")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        try:
            realm, own = token_service(self.base, fields.get("realm"))
        except ValueError as exc:
            raise RuntimeFailure(f"registry {self.host}: {exc}; not asked (a registry that names another kind of "
                                 "token service is misconfigured or hostile)") from None
        query = urllib.parse.urlencode({k: v for k, v in fields.items() if k in ("service", "scope")})
        shown = _shown(realm)
        request = urllib.request.Request(realm + ("&" if urllib.parse.urlsplit(realm).query else "?") + query
                                         if query else realm)
        sent = bool(creds and own)
        if sent:
            request.add_unredirected_header("Authorization",
                                            "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode())
        try:
            body = http.read_capped(request, limit=http.TOKEN_LIMIT, deadline=http.TOKEN_DEADLINE)
        except urllib.error.HTTPError as exc:
            if sent:
                raise RuntimeFailure(f"registry {self.host}: the token service refused the credentials ({exc.code}): "
                                     f"run `docker login {self.host}` again") from None
            withheld = (f" (the docker config's credentials for {self.host} go only to a token service on "
                        f"{self.host} itself)") if creds else ""
            raise RuntimeFailure(f"registry {self.host}: the token service {shown} refused an anonymous token "
                                 f"request ({exc.code}){withheld}") from None
        except http.Refused as exc:
            raise RuntimeFailure(f"registry {self.host}: the token service {shown}: {exc}") from None
        except (OSError, ValueError) as exc:  # ValueError: http.client.InvalidURL
            raise RuntimeFailure(f"registry {self.host}: token service {shown} unreachable: "
                                 f"{http.why(exc)}") from None
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError included; RecursionError: JSON nested too deep
            answer = None
        if not isinstance(answer, dict):
            raise RuntimeFailure(f"registry {self.host}: the token service {shown} answered "
                                 "something other than a JSON object")
        token = answer.get("token") or answer.get("access_token")
        if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
            raise RuntimeFailure(f"registry {self.host}: the token service {shown} answered no usable token "
                                 "(`token` must be a non-empty string of printable characters, without spaces or "
                                 "line breaks)")
        self._auth = f"Bearer {token}"

    def image(self, name: str, tag: str) -> tuple[dict, dict] | None:
        """(manifest, image config) of name:tag (the linux/amd64 image of an index); None when the tag is absent."""
        found = self._manifest(name, tag)
        if found is None:
            return None
        manifest, config = found
        return (manifest, {}) if config is None else (manifest, self._config(name, config))

    def _manifest(self, name: str, tag: str) -> tuple[dict, str | None] | None:
        """(manifest, its config digest) of name:tag, the linux/amd64 image's of an index (({}, None) when the index
        has none); None when the tag is absent."""
        manifest = self.get_json(f"/v2/{name}/manifests/{tag}", MANIFEST_MEDIA)
        if manifest is None:
            return None
        path = f"/v2/{name}/manifests/{tag}"
        try:
            if "manifests" in manifest:  # an index: take linux/amd64
                chosen = next((m for m in manifest["manifests"]
                               if (m.get("platform") or {}).get("architecture") == "amd64"), None)
                if chosen is None:
                    return {}, None
                path = f"/v2/{name}/manifests/{chosen['digest']}"
                manifest = self.get_json(path, MANIFEST_MEDIA) or {}
            config = manifest["config"]["digest"]
        except (KeyError, TypeError, AttributeError):  # a JSON object, but not a manifest
            raise RuntimeFailure(f"registry {self.host}: GET {path} answered a JSON object that is not an image "
                                 "manifest (no config digest)") from None
        layers = manifest.get("layers") or []
        sizes = [manifest["config"].get("size")] + [layer.get("size") if isinstance(layer, dict) else "garbage"
                                                    for layer in (layers if isinstance(layers, list) else [layers])]
        if not all(size is None or (isinstance(size, int) and not isinstance(size, bool)) for size in sizes):
            raise RuntimeFailure(f"registry {self.host}: GET {path} answered a manifest whose config or layers have "
                                 "sizes that are not integers")
        if not isinstance(config, str) or not DIGEST_RE.fullmatch(config):
            raise RuntimeFailure(f"registry {self.host}: GET {path} answered a manifest whose config digest is not "
                                 "a digest (algorithm:hex)")
        return manifest, config

    def _config(self, name: str, digest: str) -> dict:
        """The image config blob `digest` of name, checked to be one (config.Labels a mapping, or absent)."""
        blob = f"/v2/{name}/blobs/{digest}"
        found = self.get_json(blob) or {}
        inner = found.get("config")
        if not (inner is None or isinstance(inner, dict)) or not isinstance((inner or {}).get("Labels") or {}, dict):
            raise RuntimeFailure(f"registry {self.host}: GET {blob} answered a JSON object that is not an image "
                                 "config (config.Labels is not a mapping)")
        return found

    def labels_of_tags(self, name: str, tag_list: list[str], jobs: int = 8) -> dict[str, dict | None]:
        """{tag: labels of name:tag, None when the tag is absent}: each tag's manifest read once, each distinct image
        config once (a row's tag and its aliases name one image), up to `jobs` reads at a time. The first failure
        (RuntimeFailure) is raised."""
        wanted = list(dict.fromkeys(tag_list))
        with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(wanted)))) as pool:
            manifests = dict(zip(wanted, pool.map(lambda tag: self._manifest(name, tag), wanted), strict=True))
            digests = list(dict.fromkeys(found[1] for found in manifests.values() if found and found[1]))
            configs = dict(zip(digests, pool.map(lambda digest: self._config(name, digest), digests), strict=True))
        return {tag: None if found is None else labels_of(configs[found[1]]) if found[1] else {}
                for tag, found in manifests.items()}

    def blob(self, name: str, digest: str, sink) -> None:
        """Stream the blob `digest` of repository name to sink (bytes chunks), checking its sha256 at the end."""
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise RuntimeFailure(f"registry {self.host}: {digest[:80]!r} is not a sha256 blob digest")
        hasher = hashlib.sha256()

        def both(chunk: bytes) -> None:
            hasher.update(chunk)
            sink(chunk)

        if self.request("GET", f"/v2/{name}/blobs/{digest}", sink=both) is None:
            raise RuntimeFailure(f"registry {self.host}: blob {digest} of {name} is not there (404)")
        if f"sha256:{hasher.hexdigest()}" != digest:
            raise RuntimeFailure(f"registry {self.host}: blob {digest} of {name} arrived with another sha256 "
                                 f"(sha256:{hasher.hexdigest()})")

    def digest(self, name: str, tag: str) -> str | None:
        """The manifest digest (sha256:...) that name:tag points at, as cosign resolves it; None when absent."""
        found = self.request("GET", f"/v2/{name}/manifests/{tag}", accept=MANIFEST_MEDIA)
        return None if found is None else "sha256:" + hashlib.sha256(found[0]).hexdigest()

    def labels(self, name: str, tag: str) -> dict | None:
        """Labels in the image config of name:tag; None when the tag is absent."""
        found = self.image(name, tag)
        return None if found is None else labels_of(found[1])

    def platform_labels(self, name: str, tag: str) -> dict[str, dict] | None:
        """{platform (linux/arm64): labels of its image} of name:tag, each image of an index, or the one image of a
        manifest (its config's architecture); None when the tag is absent."""
        found = self.platform_state(name, tag)
        return None if found is None else found[1]

    def platform_state(self, name: str, tag: str) -> tuple[str, dict[str, dict]] | None:
        """(the tag's manifest digest, platform_labels) with the tag's manifest read once; None when absent."""
        answer = self.request("GET", f"/v2/{name}/manifests/{tag}", accept=MANIFEST_MEDIA)
        if answer is None:
            return None
        digest = "sha256:" + hashlib.sha256(answer[0]).hexdigest()
        try:
            manifest = json.loads(answer[0])
        except (ValueError, RecursionError):
            manifest = None
        if not isinstance(manifest, dict):
            raise RuntimeFailure(f"registry {self.host}: GET /v2/{name}/manifests/{tag} answered something other "
                                 "than a JSON object")
        return digest, self._platform_labels(name, tag, manifest)

    def _platform_labels(self, name: str, tag: str, manifest: dict) -> dict[str, dict]:
        if "manifests" not in manifest:  # one image: its config says its platform
            config_digest = (manifest.get("config") or {}).get("digest") if isinstance(manifest.get("config"), dict) else None
            if not isinstance(config_digest, str) or not DIGEST_RE.fullmatch(config_digest):
                raise RuntimeFailure(f"registry {self.host}: GET /v2/{name}/manifests/{tag} answered a JSON object "
                                     "that is neither an index nor an image manifest (no config digest)")
            config = self._config(name, config_digest)
            return {f"linux/{config.get('architecture') or 'amd64'}": labels_of(config)}
        out = {}
        entries = manifest.get("manifests")
        for entry in entries if isinstance(entries, list) else []:
            platform = entry.get("platform") if isinstance(entry, dict) else None
            digest = entry.get("digest") if isinstance(entry, dict) else None
            if not isinstance(platform, dict) or not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
                continue  # attestation manifests (unknown/unknown) and garbage: no image of a platform
            found = self._manifest(name, digest)
            if found and found[1]:
                out[f"{platform.get('os', 'linux')}/{platform.get('architecture', '')}"] = labels_of(
                    self._config(name, found[1]))
        return out

    def index_images(self, name: str, reference: str) -> dict[str, str]:
        """{platform: manifest digest} of the images of the index at name:reference (a tag or a digest); {} when it
        is a single image or absent."""
        manifest = self.get_json(f"/v2/{name}/manifests/{reference}", MANIFEST_MEDIA) or {}
        entries = manifest.get("manifests") if isinstance(manifest.get("manifests"), list) else []
        return {f"{e['platform'].get('os', 'linux')}/{e['platform'].get('architecture', '')}": e["digest"]
                for e in entries if isinstance(e, dict) and isinstance(e.get("platform"), dict)
                and isinstance(e.get("digest"), str) and DIGEST_RE.fullmatch(e["digest"])}

    def put_index(self, name: str, tags: list[str], images: list[tuple[str, str]]) -> str:
        """A multi-arch index (Docker manifest list) of images [(platform, manifest digest)], each already in name,
        put under each of tags; returns the index's digest."""
        entries = []
        for platform, digest in images:
            found = self.request("GET", f"/v2/{name}/manifests/{digest}", accept=MANIFEST_MEDIA)
            if found is None:
                raise RuntimeFailure(f"registry {self.host}: {name}@{digest} ({platform}) is not there: push it first")
            body, headers = found
            media = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
            if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
                raise RuntimeFailure(f"registry {self.host}: {name}@{digest} arrived with another digest")
            os_name, _, arch = platform.partition("/")
            entries.append({"mediaType": media, "digest": digest, "size": len(body),
                            "platform": {"architecture": arch, "os": os_name}})
        index = json.dumps({"schemaVersion": 2, "mediaType": INDEX_MEDIA, "manifests": entries}, indent=3).encode()
        for tag in tags:
            if self.request("PUT", f"/v2/{name}/manifests/{tag}", data=index, content_type=INDEX_MEDIA) is None:
                raise RuntimeFailure(f"registry {self.host}: cannot put the index {name}:{tag} (404)")
        return "sha256:" + hashlib.sha256(index).hexdigest()

    def retag(self, name: str, source: str, target: str) -> None:
        """Point tag `target` at the manifest of `source` (no layer moves: the registry has them)."""
        found = self.request("GET", f"/v2/{name}/manifests/{source}", accept=MANIFEST_MEDIA)
        if found is None:
            raise RuntimeFailure(f"registry {self.host}: {name}:{source} does not exist, cannot tag it {target}")
        body, headers = found
        media = next(v for k, v in headers.items() if k.lower() == "content-type")
        if self.request("PUT", f"/v2/{name}/manifests/{target}", data=body, content_type=media) is None:
            raise RuntimeFailure(f"registry {self.host}: cannot tag {name}:{source} as {target} (404)")


def labels_of(config: dict) -> dict:
    return (config.get("config") or {}).get("Labels") or {}


def labels(repository: str, tag: str) -> dict | None:
    host, name = split(repository)
    return Client(host).labels(name, tag)


def labels_of_tags(repository: str, tag_list: list[str]) -> dict[str, dict | None]:
    """Client.labels_of_tags of the repository's registry (one client: one authentication for all the reads)."""
    host, name = split(repository)
    return Client(host).labels_of_tags(name, tag_list)


def digest(repository: str, tag: str) -> str | None:
    host, name = split(repository)
    return Client(host).digest(name, tag)


def platform_labels(repository: str, tag: str) -> dict[str, dict] | None:
    host, name = split(repository)
    return Client(host).platform_labels(name, tag)


def platform_state(repository: str, tag: str) -> tuple[str, dict[str, dict]] | None:
    host, name = split(repository)
    return Client(host).platform_state(name, tag)


def index_images(ref: str) -> tuple[str, dict[str, str]]:
    """(repository, {platform: digest}) of REPO:TAG or REPO@DIGEST when it is a multi-arch index ({} otherwise)."""
    repository, sep, reference = ref.rpartition("@") if "@" in ref else ref.rpartition(":")
    if not sep or "/" in reference:
        return ref, {}
    host, name = split(repository)
    return repository, Client(host).index_images(name, reference)


def put_index(repository: str, tag_list: list[str], images: list[tuple[str, str]]) -> str:
    host, name = split(repository)
    return Client(host).put_index(name, tag_list, images)


def retag(repository: str, source: str, target: str) -> None:
    host, name = split(repository)
    Client(host).retag(name, source, target)
