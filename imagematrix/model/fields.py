"""The matrix file's fields: the pattern every value must match before it can reach a Dockerfile line, the
row keys, the ONE table of pinned packages (row field -> distribution), and the pydantic models that check them."""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any

from packaging.version import InvalidVersion, Version
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from imagematrix.model import paths, tags, yamlio
from imagematrix.model.errors import InputError

# --- value patterns -------------------------------------------------------------------------------------

PACKAGE_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?\Z")  # PEP 508 distribution name
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# Environment values: no whitespace, quotes, `$`, backslash or shell metacharacters.
ENV_VALUE_RE = re.compile(r"^[A-Za-z0-9_./:,=+@%-]*\Z")
PYTHON_RE = re.compile(r"^3\.[0-9]{1,2}\Z")
CUDA_RE = re.compile(r"^[0-9]{2}\.[0-9]\Z")
PATCH_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*\Z")
# Free text (override and skip reasons): one line, rendered only into Dockerfile comments and labels;
# no quotes, backslash, `$` or backtick, so it can never escape a comment or a quoted label.
REASON_RE = re.compile(r"^[^\x00-\x1f\x7f\"'`$\\]{10,300}\Z")

# Docker image reference (distribution/reference grammar), tag or digest required: no implicit `latest`.
_DOMAIN = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REF_RE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG}(?:@{_DIGEST})?|@{_DIGEST})\Z"
)


DEBOOTSTRAP_PREFIX = "debootstrap:"
# Names the tool itself uses beside row ids (locks/tools.txt is the build tools' lock): no row may take them.
RESERVED_IDS = frozenset({"tools"})
BOOTSTRAP_IMAGE = "imagematrix-base:{suite}"  # the local image a debootstrap:<suite> base becomes
# A published debootstrap base: `build.py base --suite S --registry R --record` pushes the bootstrapped image as
# R/imagematrix-base:<suite> and records its manifest digest in knowledge/bases.yaml; rows on that suite are then
# built FROM R/imagematrix-base@<digest> (the digest is in the generated Dockerfile, so in the row's input digest;
# R comes in as the BASE_REGISTRY build argument), from any builder that can pull, on any machine.
BASE_REPOSITORY = "imagematrix-base"
MANIFEST_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")


ROW_KEYS = (
    "id", "verl", "vllm", "torch", "cuda", "flash_attn", "tensordict", "transformers",
    "python", "base", "extras", "env", "overrides", "skip_patches", "rollout_only", "flash_attn_archs", "verl_extras",
    "gpus", "gpus_jit", "platforms",
)

# The platforms a row may be built for (`platforms:`, default amd64 only), in the order builds and locks take them.
# linux/amd64 is each row's first platform: its lock, context and tag stay where they were before rows had platforms.
PLATFORMS = ("linux/amd64", "linux/arm64")
DEFAULT_PLATFORM = "linux/amd64"


def platform_slug(platform: str) -> str:
    """linux/arm64 -> linux-arm64: the platform in a path (locks/linux-arm64/<row>.txt) or a file name."""
    return platform.replace("/", "-")


PIN_FIELDS = ("verl", "vllm", "torch", "tensordict", "transformers", "flash_attn")


PIN_PACKAGES = {"verl": "verl", "vllm": "vllm", "torch": "torch", "tensordict": "tensordict",
                "transformers": "transformers", "flash_attn": "flash-attn"}


def _string(value: Any) -> Any:
    # YAML reads `python: 3.10` as the float 3.1 and `cuda: 12.4` as a float: insist on quoted strings.
    if isinstance(value, bool) or isinstance(value, int | float):
        raise ValueError(f"{value!r} is a YAML number, not a string: quote it (\"{value}\")")
    return value


def _exact_version(value: str) -> str:
    try:
        version = Version(value)
    except InvalidVersion:
        raise ValueError(
            f"{value!r} is not an exact PEP 440 version; write one release, e.g. \"0.8.5\" (no ranges, no 'latest')"
        ) from None
    if version.local is not None:
        raise ValueError(f"{value!r} has a local version label (+...): pin the public release")
    if str(version) != value:
        # accept only the canonical spelling, so tags and locks are stable
        raise ValueError(f"{value!r} is not in canonical form: write \"{version}\"")
    return value


def _matching(pattern: re.Pattern[str], what: str):
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return check


def _base(value: str) -> str:
    if value.startswith(DEBOOTSTRAP_PREFIX):
        suite = value[len(DEBOOTSTRAP_PREFIX):]
        suites = bootstrap_suites()
        if suite not in suites:
            raise ValueError(f"unknown debootstrap suite {suite!r}; known: {', '.join(sorted(suites))} "
                             f"(listed in {paths.BASES.relative_to(paths.ROOT)})")
        return value
    if not IMAGE_REF_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid image reference with a tag or digest "
            "(e.g. nvidia/cuda:12.4.1-runtime-ubuntu22.04), nor debootstrap:<suite>"
        )
    return value


Str = Annotated[str, BeforeValidator(_string)]


ExactVersion = Annotated[Str, AfterValidator(_exact_version)]


PackageName = Annotated[Str, AfterValidator(_matching(PACKAGE_RE, "package name"))]


EnvName = Annotated[Str, AfterValidator(_matching(ENV_NAME_RE, "environment variable name"))]


EnvValue = Annotated[Str, AfterValidator(_matching(ENV_VALUE_RE, "environment value (allowed: letters, digits, _./:,=+@%-)"))]


PythonVersion = Annotated[Str, AfterValidator(_matching(PYTHON_RE, "Python version (write e.g. \"3.11\")"))]


CudaVersion = Annotated[Str, AfterValidator(_matching(CUDA_RE, "CUDA version (write major.minor, e.g. \"12.4\")"))]


Reason = Annotated[Str, AfterValidator(_matching(REASON_RE, "reason (one line, 10-300 characters, no quotes, $, backtick or backslash)"))]


PatchId = Annotated[Str, AfterValidator(_matching(PATCH_ID_RE, "patch id"))]


RowId = Annotated[Str, AfterValidator(_matching(tags.TAG_RE, "row id (it must be a valid image tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"))]


BaseRef = Annotated[Str, AfterValidator(_base)]


def gpu_words(text: str) -> tuple[str, ...]:
    return tuple(w for w in re.split(r"[\s_-]+", text.upper()) if w)


@functools.cache
def gpu_models() -> dict[tuple[str, ...], str]:
    """The GPUs of knowledge/gpus.yaml (its `capabilities`), spelling as words -> capability "X.Y", with each
    capability as `sm_XY` and `X.Y` too: what a row's `gpus` may name. knowledge/gpus.py reads the same section for
    everything else (and says what is wrong with a malformed file; here only the names are taken)."""
    doc = yamlio.load_mapping(paths.GPUS, keys="`capabilities`, `drivers` and `torch_arch_lists`")
    section = doc.get("capabilities")
    if not isinstance(section, dict):
        raise InputError("expected a `capabilities` mapping of GPU models by compute capability",
                         where=f"{paths.GPUS}:{yamlio.line_of(doc) or 1}", fix="see the comment above the section")
    out: dict[tuple[str, ...], str] = {}
    for cap, models in section.items():
        cap = str(cap)
        major, _, minor = cap.partition(".")
        out[gpu_words(f"sm_{major}{minor}")] = out[gpu_words(cap)] = cap
        for model in models if isinstance(models, list) else []:
            out[gpu_words(str(model))] = cap
    return out


def _gpu(value: str) -> str:
    if "\n" in value or gpu_words(value) not in gpu_models():
        examples = "H100, A100, L40S, T4, B200, 'RTX 5090'"
        raise ValueError(f"{value!r} is not a GPU of {paths.GPUS.relative_to(paths.ROOT)}: name a model as listed "
                         f"there ({examples}) or a capability (sm_90, 9.0)")
    return value


GpuName = Annotated[Str, AfterValidator(_gpu)]


def _platform(value: str) -> str:
    if value not in PLATFORMS:
        raise ValueError(f"{value!r} is not a platform images are built for: write one of {', '.join(PLATFORMS)}")
    return value


Platform = Annotated[Str, AfterValidator(_platform)]


CAPABILITY_RE = re.compile(r"^\d{1,2}\.\d\Z")
Capability = Annotated[Str, AfterValidator(_matching(CAPABILITY_RE, "compute capability (write major.minor, e.g. \"9.0\")"))]


class Override(BaseModel):
    """A pin that deliberately leaves a range another package declares (passed to uv as an override)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: ExactVersion
    reason: Reason


class RowFields(BaseModel):
    """The keys a row (or `defaults`) may carry; all optional here, completeness is checked on Row."""

    model_config = ConfigDict(extra="forbid")
    id: RowId | None = None
    verl: ExactVersion | None = None
    vllm: ExactVersion | None = None
    torch: ExactVersion | None = None
    cuda: CudaVersion | None = None
    flash_attn: ExactVersion | None = None
    tensordict: ExactVersion | None = None
    transformers: ExactVersion | None = None
    python: PythonVersion | None = None
    base: BaseRef | None = None
    extras: dict[PackageName, ExactVersion] = {}
    env: dict[EnvName, EnvValue] = {}
    overrides: dict[PackageName, Override] = {}
    skip_patches: dict[PatchId, Reason] = {}
    rollout_only: Reason | None = None  # why the image cannot train with verl (see knowledge/training.yaml)
    # the GPU architectures a compiled flash-attn wheel covers (default: all that flash-attn and torch support)
    flash_attn_archs: list[Capability] | None = None
    # extras of verl installed besides the pins (e.g. verl-core when the row overrides vllm: see the README)
    verl_extras: list[PackageName] = []
    # the GPUs the image must run on natively (SASS for each, in every required library; knowledge/gpus.yaml names),
    # and those it must run on at least through PTX JIT: the build's coverage step fails an image that does not
    gpus: list[GpuName] = []
    gpus_jit: list[GpuName] = []
    # the platforms the image is built for (one tag, a multi-arch index when there are several); default amd64 only
    platforms: list[Platform] | None = None


REQUIRED = ("verl", "vllm", "torch", "cuda", "tensordict", "transformers", "python", "base")


class Suite(BaseModel):
    """A distribution suite that `debootstrap:<suite>` bases bootstrap (knowledge/bases.yaml)."""

    model_config = ConfigDict(extra="forbid")
    distro: str
    mirror: str
    python: list[PythonVersion]
    components: list[Str] | None = None  # archive components (default: main); the base's sources.list lists them
    mirror_arm64: str | None = None  # the suite's arm64 packages, when `mirror` lacks them (Ubuntu: ports)
    # the manifest digest of the published base (REGISTRY/imagematrix-base:<suite>), once `build.py base --record` ran
    digest: Annotated[Str, AfterValidator(_matching(MANIFEST_DIGEST_RE, "manifest digest (sha256: and 64 hex digits)"))] | None = None


@functools.cache
def bootstrap_suites() -> dict[str, Any]:
    """The bootstrappable bases of knowledge/bases.yaml (read once), checked: a malformed file is bad input."""
    data = yamlio.load_mapping(paths.BASES, keys="a `debootstrap:` mapping of suites")
    suites = data.get("debootstrap")
    if not isinstance(suites, dict):
        # the line of `debootstrap:` when there is one, else of whatever the file holds instead (1: an empty file)
        line = (yamlio.line_of(data, "debootstrap") if isinstance(data, dict) and "debootstrap" in data
                else yamlio.line_of(data)) or 1
        raise InputError("expected a mapping with a `debootstrap:` mapping of suites", where=f"{paths.BASES}:{line}",
                         fix="see the comment at the top of the file")
    for name, suite in suites.items():
        try:
            Suite.model_validate(dict(suite) if isinstance(suite, dict) else suite)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InputError(f"suite {name!r}: {'.'.join(map(str, first['loc'])) or 'value'}: {first['msg']}",
                             where=f"{paths.BASES}:{yamlio.line_of(suites, name)}",
                             fix="each suite has distro, mirror and a list of quoted Python versions") from None
    return {str(name): dict(suite) for name, suite in suites.items()}


REGISTRY_RE = re.compile(rf"^{_DOMAIN}(?:/{_COMPONENT})*\Z")  # host[:port][/namespace...], as --registry takes it

# The same checks for values given on the command line (cli/common.py turns them into argparse types).
check_exact_version = _exact_version
check_python = _matching(PYTHON_RE, "Python version (write e.g. 3.11)")
check_registry = _matching(REGISTRY_RE, "registry (host[:port]/namespace, e.g. ghcr.io/me or 127.0.0.1:5000/ns)")
