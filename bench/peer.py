"""The peer: hand-written Dockerfiles for the same pins, as users write them today (modelled on verl's published
ones: a base, the distribution's Python, then `pip install` of torch and of the rest, without pip's cache)."""

from __future__ import annotations

from pathlib import Path

BASE = "imagematrix-base:bookworm"
PIP = "--mount=type=secret,id=ca-cert PIP_CERT=/run/secrets/ca-cert pip install --no-cache-dir"


def dockerfile(pins: dict[str, str], marker: str, *, layered: bool) -> str:
    """layered: torch in one RUN, the rest in a second (verl's style; a second row reuses the torch layer).
    Otherwise one `pip install` of every pin (so pip sees all of them at once, as `validate` does).
    The marker, a shell comment, lets the bench find (and prune) its own build-cache records."""
    specs = [f"{name}=={version}" for name, version in pins.items()]
    torch = [s for s in specs if s.startswith("torch==")]
    rest = [s for s in specs if not s.startswith("torch==")]
    installs = [torch, rest] if layered else [specs]
    return "\n".join([
        f"FROM {BASE}",
        "ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1",
        "RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates python3.11 python3.11-venv"
        f" && rm -rf /var/lib/apt/lists/*  # {marker}",
        f"RUN python3.11 -m venv /opt/venv  # {marker}",
        "ENV PATH=/opt/venv/bin:$PATH",
        *[f"RUN {PIP} {' '.join(group)}  # {marker}" for group in installs],
        "",
    ])


def build_cmd(cli: str, context: Path, tag: str, secrets: dict[str, Path], *, no_cache: bool) -> list[str]:
    """`docker build` (BuildKit) of context with the host CA as the `ca-cert` secret."""
    cmd = [cli, "build", "--progress=plain", "-t", tag, "--secret", f"id=ca-cert,src={secrets['ca-cert']}"]
    return cmd + (["--no-cache"] if no_cache else []) + [str(context)]


def write_context(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(text)
    return directory
