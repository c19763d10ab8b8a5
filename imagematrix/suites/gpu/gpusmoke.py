"""Helpers of the GPU smoke suite, standard library only: no torch, no imagematrix (this folder is mounted alone
into images, which have neither imagematrix nor testinfra). One exception, optional: in host mode, where this folder
sits in the imagematrix package (imagematrix/suites/gpu), load_vllm_advice reads the known vLLM failures through
imagematrix (in an image they come as JSON).

Everything here runs on a CPU and is unit-tested in tests/unit/suites/.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TINY_MODEL = HERE / "assets" / "tiny-llama"
SCRIPTS = HERE / "scripts"

HOST, IMAGE = "host", "image"
NO_KERNEL_IMAGE = "no kernel image is available for execution on the device"
# The patches that exist for verl's external launcher on vLLM 0.7.0-0.7.2 (dockerfiles/patches/vllm-0.7-verl.yaml).
LAUNCHER_PATCHES = ("vllm-external-launcher-local-rank", "vllm-parallel-state-world-size")
# Distribution name -> the module the tests import.
MODULES = {"torch": "torch", "vllm": "vllm", "flash-attn": "flash_attn", "verl": "verl",
           "transformers": "transformers", "tensordict": "tensordict"}


def extra_modules(settings: Settings) -> list[tuple[str, str]]:
    """(distribution, module) for each package the row pins besides the stack (its `extras`), by the module name
    its distribution name gives ('-' and '.' -> '_'), as knowledge/extras.yaml's default; [] without a row."""
    if settings.row is None:
        return []
    return [(dist, re.sub(r"[-.]+", "_", dist.lower())) for dist in sorted(settings.row.pins) if dist not in MODULES]


@dataclass(frozen=True)
class RowSpec:
    """What the row promises (from its rendered row.json): id, pins, source patches."""

    id: str
    pins: dict[str, str] = field(default_factory=dict)
    patches: tuple[str, ...] = ()
    # how verl trains in the image (knowledge/training.yaml, rendered): attn_implementation (None: rollout only),
    # override, note
    training: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RowSpec:
        data = json.loads(Path(path).read_text())
        return cls(id=data["id"], pins=dict(data["pins"]), patches=tuple(data.get("patches", ())),
                   training=dict(data.get("training") or {}))

    def pin(self, dist: str) -> str | None:
        return self.pins.get(dist)


@dataclass(frozen=True)
class Settings:
    """How the suite runs: mode (None: not asked to run), and the row it checks, when known."""

    mode: str | None
    row: RowSpec | None = None

    def ships(self, dist: str) -> bool | None:
        """Whether the row installs `dist` (None: no row given, so only the environment can tell)."""
        return None if self.row is None else dist in self.row.pins


def settings(host: bool, in_image: bool, row_json: str | None, row_id: str | None, matrix: str | None) -> Settings:
    """Validate the command-line options; raises ValueError with a usage message."""
    if host and in_image:
        raise ValueError("--host and --in-image exclude each other: --host tests this Python, --in-image an image")
    if in_image and not row_json:
        raise ValueError("--in-image needs --row-json PATH (the row's dockerfiles/generated/<row-id>/row.json)")
    path = Path(row_json) if row_json else None
    if path is None and row_id and host:
        path = Path(matrix or "matrix.yaml").resolve().parent / "dockerfiles" / "generated" / row_id / "row.json"
    if path is not None and not path.is_file():
        raise ValueError(f"no row expectations at {path} (run `python build.py render` for the row)")
    row = RowSpec.load(path) if path is not None else None
    return Settings(mode=HOST if host else IMAGE if in_image else None, row=row)


def missing(settings: Settings, dist: str, error: BaseException) -> tuple[str, str]:
    """('skip' | 'fail', reason) for a package that cannot be imported.

    In an image a package the row pins must import; one it does not pin skips. In host mode a package that is
    not installed (or lacks one of its own dependencies) skips; one that is installed but breaks on import fails.
    """
    pin = settings.row.pin(dist) if settings.row else None
    if settings.mode == IMAGE:
        if pin is not None:
            return "fail", f"row {settings.row.id} pins {dist}=={pin}, but it does not import in the image: {error!r}"
        if isinstance(error, ModuleNotFoundError):
            row = settings.row.id if settings.row else "the row"
            return "skip", f"{row} does not ship {dist}"
        return "fail", f"{dist} is installed in the image but does not import: {error!r}"
    if isinstance(error, ModuleNotFoundError):
        return "skip", f"{dist} is not importable in this Python (host mode): {error}"
    return "fail", f"{dist} is installed here but does not import: {error!r}"


def _arch(entry: str) -> tuple[str, int, int, str] | None:
    """'sm_90a' -> ('sm', 9, 0, 'a'); 'compute_86' -> ('compute', 8, 6, '')."""
    m = re.fullmatch(r"(sm|compute)_(\d+?)(\d)([af]?)", entry)
    return (m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)) if m else None


def coverage(capability: tuple[int, int], arch_list: list[str]) -> tuple[list[str], list[str]]:
    """(machine code entries that run on the device, PTX entries the driver can JIT for it).

    Machine code (sm_XY) runs on devices of the same major and a minor >= Y; sm_XYa only on X.Y itself;
    sm_XYf on the same major from Y on. PTX (compute_XY) JIT-compiles for any device >= X.Y, except the
    arch-specific 'a' PTX, which serves X.Y only.
    """
    major, minor = capability
    sass, ptx = [], []
    for entry in arch_list:
        parsed = _arch(entry)
        if parsed is None:
            continue
        kind, a_major, a_minor, suffix = parsed
        if suffix == "a":
            ok = (a_major, a_minor) == capability
        elif kind == "sm":
            ok = a_major == major and a_minor <= minor
        else:
            ok = (a_major, a_minor) <= capability
        if ok:
            (sass if kind == "sm" else ptx).append(entry)
    return sass, ptx


def kernel_image_message(name: str, capability: tuple[int, int], arch_list: list[str], torch_version: str,
                         cuda_version: str | None) -> str:
    """The failure users see as 'no kernel image is available for execution on the device', with the fix."""
    sm = f"sm_{capability[0]}{capability[1]}"
    return (f"{NO_KERNEL_IMAGE}: {name} is {sm} (compute capability {capability[0]}.{capability[1]}), but torch "
            f"{torch_version} (CUDA {cuda_version}) carries kernels for {', '.join(arch_list) or 'no architecture'} "
            f"and no PTX it can JIT for {sm}. Fix: use a row whose torch/CUDA build includes {sm} (newer GPUs need "
            f"a newer torch and CUDA, e.g. sm_100/sm_120 need CUDA 12.8 or later; older ones an older torch), "
            f"or run this image on a GPU of a listed architecture.")


def dtype_advice(capability: tuple[int, int]) -> str:
    """bf16 has hardware support from sm80 (Ampere) on; V100 (sm70), T4 and the 20-series (sm75) need float16."""
    return "bfloat16" if capability >= (8, 0) else "float16"


def launcher_test_reason(settings: Settings, vllm_version: str | None) -> str | None:
    """Why the 2-rank external-launcher test does not apply (None: it applies).

    It exists for the vLLM 0.7.0-0.7.2 source patches: with a row, the row must carry them; without one (host
    mode), the installed vLLM must be one of those versions.
    """
    if settings.row is not None:
        if all(p in settings.row.patches for p in LAUNCHER_PATCHES):
            return None
        return f"row {settings.row.id} carries no vLLM 0.7.x external-launcher patches"
    if vllm_version and re.match(r"0\.7\.[0-2](\D|$)", vllm_version):
        return None
    return f"only for vLLM 0.7.0-0.7.2 (the patched versions); installed: vllm {vllm_version}"


def result_line(output: str, marker: str = "RESULT ") -> list[dict]:
    """The JSON objects a helper script printed after `marker`, in order.

    Found anywhere in the output, not only at line starts: ranks of one torchrun share a pipe, and another
    rank's text may land just before a result.
    """
    decoder, out, at = json.JSONDecoder(), [], output.find(marker)
    while at >= 0:
        try:
            obj, end = decoder.raw_decode(output, at + len(marker))
            out.append(obj)
        except json.JSONDecodeError:
            end = at + len(marker)
        at = output.find(marker, end)
    return out


def versions() -> str:
    """Installed versions of the stack, for failure messages."""
    out = []
    for dist in ("torch", "vllm", "flash-attn", "verl", "transformers", "tensordict", "triton"):
        try:
            out.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist}: not installed")
    return ", ".join(out)


# --- known vLLM failures and their fixes (knowledge/vllm-advice.yaml) -------------------------------------------

# Inside an image the entries come as JSON, written from the knowledge by imagematrix/stages/smoke_gpu.py and
# mounted next to row.json (--vllm-advice); in host mode from the project when this folder sits in its package.
ADVICE_JSON = "vllm-advice.json"
_ADVICE: dict = {"entries": (), "capability": None}


def load_vllm_advice(path: str | None) -> list[dict]:
    """The known vLLM failures as plain data (imagematrix.knowledge.vllm_advice.export()): from `path` when given,
    else from the project this folder belongs to (host mode, the project importable), else none."""
    if path:
        return list(json.loads(Path(path).read_text()))
    return _project_advice(HERE)


def _project_advice(here: Path) -> list[dict]:
    """The entries from the imagematrix package that holds `here` as <root>/imagematrix/suites/gpu (a checkout or an
    installed package); none when `here` sits elsewhere (inside an image the suite is mounted alone at a shallow path
    such as /imagematrix/gpu)."""
    if len(here.parents) < 3 or here.parts[-3:-1] != ("imagematrix", "suites"):
        return []
    root = here.parents[2]
    if not (root / "imagematrix" / "knowledge" / "vllm_advice.py").is_file():
        return []
    try:
        if str(root) not in sys.path:
            sys.path.append(str(root))  # last: the environment's own packages win
        from imagematrix.knowledge import vllm_advice

        return vllm_advice.export()
    except Exception:  # the project's dependencies are not in this Python: failures go without advice
        return []


def use_advice(entries: list[dict] | None = None, capability: tuple[int, int] | None = None) -> None:
    """Set the entries (and, once known, device 0's compute capability) that Ran.explain names fixes from."""
    if entries is not None:
        _ADVICE["entries"] = tuple(entries)
    if capability is not None:
        _ADVICE["capability"] = tuple(capability)


def known_fixes(output: str, vllm_version: str | None, capability: tuple[int, int] | None, entries,
                matches=None) -> list[str]:
    """One line naming the fix for each known failure whose symptom `output` contains, for this vLLM and, for an
    entry with a GPU condition, this compute capability (None: not checked). The same matching as
    imagematrix.knowledge.vllm_advice.for_failure / fix_line, standard library (+ packaging where present) only."""
    if not vllm_version or not output:
        return []
    matches = matches or packaging_matcher()
    out = []
    for entry in entries:
        if entry["symptom"] not in output:
            continue
        try:
            if not matches(vllm_version, entry["vllm"]):
                continue
            if capability is not None and entry.get("capability") and not matches(
                    f"{capability[0]}.{capability[1]}", entry["capability"]):
                continue
        except ValueError:  # a version the matcher cannot read: no advice rather than a crash of the message
            continue
        out.append(f"known vLLM failure {entry['id']} (vllm-advice.yaml): {entry['when']} -> fix: "
                   f"{entry['advice']}")
    return out


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class Ran:
    """A finished helper process: its command, exit code, output and the `RESULT {json}` lines it printed."""

    def __init__(self, cmd: list[str], returncode: int, output: str):
        self.cmd, self.returncode, self.output = cmd, returncode, output
        self.results = result_line(output)

    def fixes(self) -> list[str]:
        """The fixes for the known vLLM failures in the output (use_advice: the entries and the GPU)."""
        return known_fixes(self.output, _installed("vllm"), _ADVICE["capability"], _ADVICE["entries"])

    def explain(self, what: str) -> str:
        fixes = "".join(f"{line}\n" for line in self.fixes())
        return (f"{what} (exit {self.returncode})\n{fixes}$ {' '.join(self.cmd)}\nversions: {versions()}\n"
                f"--- output (tail) ---\n{self.output[-6000:]}")


def start(args: list, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `python ARGS` (this Python) with output captured; NCCL_*/VLLM_* settings of the caller are kept."""
    return subprocess.Popen([sys.executable, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                            "PYTHONUNBUFFERED": "1", **(env or {})}, cwd=tempfile.gettempdir())


def finish(proc: subprocess.Popen, timeout: float) -> Ran:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        output += f"\n[killed after {timeout:.0f} s]"
    return Ran([str(a) for a in proc.args], proc.returncode, output)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def visible_devices(count: int) -> list[str]:
    """The CUDA_VISIBLE_DEVICES entries of the visible GPUs (their indices when the variable is unset)."""
    listed = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


# --- verl training smoke test (test_gpu_verl_train.py): config as data, console metrics, tiny dataset ---------------

VERL_TRAIN_SPEC = HERE / "assets" / "verl-train.json"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_STEP_LINE = re.compile(r"(?:^|[\s)])step:(\d+) - (.*)$")
_WRAPPED_NUMBER = re.compile(r"^(?:np|numpy|torch)\.\w+\((.*)\)$")


def _version_key(version: str) -> tuple:
    """A sortable key for the versions the matrix uses: '0.3.0.post1', '0.9.1', '2.8.0+cu128', '0.10.0rc1'."""
    m = re.match(r"^v?(\d+(?:\.\d+)*)(?:[.-]?(a|b|rc|c)(\d*))?(?:[.-]?post(\d*))?(?:[.-]?dev(\d*))?", version.strip())
    if not m:
        raise ValueError(f"not a version: {version!r}")
    release = tuple(int(p) for p in m.group(1).split("."))
    release += (0,) * (4 - len(release))
    # dev < pre-release < final < post-release
    pre = (-2, 0) if m.group(5) is not None and m.group(2) is None else (
        (-1, int(m.group(3) or 0)) if m.group(2) else (0, 0))
    post = int(m.group(4) or 0) if m.group(4) is not None else -1
    return release, pre, post


def simple_matcher(version: str, specifier: str) -> bool:
    """Whether `version` satisfies a comma-separated PEP 440 specifier ('>=0.6,<0.9', '==0.3.*', '' matches all).

    Standard library only; covers the forms verl-train.json uses. `packaging_matcher()` is preferred where
    `packaging` imports (every image: vLLM and verl need it).
    """
    for clause in (c.strip() for c in specifier.split(",")):
        if not clause:
            continue
        m = re.fullmatch(r"(===|==|!=|>=|<=|~=|>|<)\s*(\S+)", clause)
        if not m:
            raise ValueError(f"unsupported version specifier clause: {clause!r}")
        op, want = m.groups()
        if want.endswith(".*"):
            prefix = _version_key(want[:-2])[0]
            n = len(want[:-2].split("."))
            same = _version_key(version)[0][:n] == prefix[:n]
            if (op == "==" and not same) or (op == "!=" and same):
                return False
            if op not in ("==", "!="):
                raise ValueError(f"wildcard only with == or !=: {clause!r}")
            continue
        have, ref = _version_key(version), _version_key(want)
        if op == "~=":
            parts = want.split(".")
            ok = have >= ref and _version_key(version)[0][:len(parts) - 1] == ref[0][:len(parts) - 1]
        else:
            # PEP 440: >V excludes V's post-releases (V.postN), as packaging does
            post_of_ref = have[0] == ref[0] and have[1] == ref[1] and ref[2] < 0 <= have[2]
            ok = {"==": have == ref, "===": version == want, "!=": have != ref, ">=": have >= ref,
                  "<=": have <= ref, ">": have > ref and not post_of_ref, "<": have < ref}[op]
        if not ok:
            return False
    return True


def packaging_matcher():
    """`packaging.specifiers` as a matcher(version, specifier) -> bool; `simple_matcher` where packaging is absent."""
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version
    except ImportError:
        return simple_matcher
    return lambda version, specifier: Version(version) in SpecifierSet(specifier, prereleases=True)


def override_key(override: str) -> str:
    """The config key a Hydra override sets: '+a.b=1' -> 'a.b', "trainer.logger=['console']" -> 'trainer.logger'."""
    key = override.split("=", 1)[0].strip()
    return key.lstrip("+~")


def load_train_spec(path: Path = VERL_TRAIN_SPEC) -> dict:
    return json.loads(Path(path).read_text())


def _applies(entry: dict, verl_version: str, attn: str | None, matches, gpus: int = 1) -> bool:
    if "attn" in entry and entry["attn"] != attn:
        return False
    if entry.get("multi_gpu") and gpus < 2:
        return False
    return matches(verl_version, entry.get("verl", ""))


def selected_overlays(spec: dict, verl_version: str, attn: str | None, matches=simple_matcher,
                      gpus: int = 1) -> list[dict]:
    """The overlays of the spec that apply to this verl version, attention implementation and GPU count (an
    overlay with `multi_gpu: true` only from 2 GPUs on), in file order."""
    return [o for o in spec.get("overlays", ()) if _applies(o, verl_version, attn, matches, gpus)]


def train_overrides(spec: dict, verl_version: str, attn: str | None, values: dict[str, str] | None = None,
                    matches=simple_matcher, gpus: int = 1) -> list[str]:
    """Hydra overrides for `python -m verl.trainer.main_ppo`: spec['base'], then each applicable overlay in order.

    An overlay's `remove` drops overrides by key; its `add` replaces an override of the same key in place or
    appends. `{name}` placeholders are filled from `values` (e.g. {model}, {train}, {val}); one left unfilled
    raises ValueError, so a path never reaches Hydra as a literal placeholder.
    """
    out = list(spec["base"])
    values = {"gpus": gpus, **(values or {})}
    for overlay in selected_overlays(spec, verl_version, attn, matches, gpus):
        drop = set(overlay.get("remove", ()))
        out = [o for o in out if override_key(o) not in drop]
        for add in overlay.get("add", ()):
            keys = [override_key(o) for o in out]
            if override_key(add) in keys:
                out[keys.index(override_key(add))] = add
            else:
                out.append(add)
    filled = []
    for o in out:
        for name, value in (values or {}).items():
            o = o.replace("{" + name + "}", str(value))
        left = re.findall(r"(?<!\$)\{(\w+)\}", o)
        if left:
            raise ValueError(f"override {o!r} has unfilled placeholder(s) {left}")
        filled.append(o)
    return filled


def duplicate_keys(overrides: list[str]) -> list[str]:
    """Keys set more than once (Hydra rejects some duplicates and silently takes the last of others)."""
    seen, dups = set(), []
    for key in map(override_key, overrides):
        if key in seen and key not in dups:
            dups.append(key)
        seen.add(key)
    return dups


def attention_blocker(spec: dict, verl_version: str, attn: str, matches=simple_matcher) -> str | None:
    """Why this verl cannot train with `attn` (None: it can). Data: spec['attention'][attn]['unsupported']."""
    rule = spec.get("attention", {}).get(attn, {})
    unsupported = rule.get("unsupported")
    if unsupported and matches(verl_version, unsupported):
        return f"verl {verl_version}: {rule.get('reason', f'{attn} is not supported for training')}"
    return None


def not_runnable(settings: Settings, reason: str) -> tuple[str, str]:
    """('fail' | 'skip', reason) for a row that cannot run a test: a failure inside an image, a skip on a host."""
    return ("fail" if settings.mode == IMAGE else "skip"), reason


def _number(text: str) -> float | str:
    text = text.strip()
    m = _WRAPPED_NUMBER.match(text)  # numpy 2 prints np.float64(0.5); torch scalars tensor(...) are not logged
    if m:
        text = m.group(1).split(",")[0].strip()
    if text in ("True", "False"):
        return float(text == "True")
    try:
        return float(text)
    except ValueError:
        return text


def step_metrics(output: str) -> dict[int, dict[str, float | str]]:
    """step -> {metric: value} from verl's console logger lines.

    verl's LocalLogger prints `step:N - key:value - key:value` (utils/logger/aggregate_logger.py
    concat_dict_to_str: values `{v:.3f}` in verl <= 0.4, `pprint.pformat(v)` from 0.5, so numpy scalars read
    `np.float64(0.5)` under numpy 2). The trainer runs in a Ray actor, whose lines Ray prefixes with
    `(TaskRunner pid=...)`; ANSI colours are dropped. Metrics of the same step on several lines are merged.
    """
    steps: dict[int, dict[str, float | str]] = {}
    for raw in output.splitlines():
        line = _ANSI.sub("", raw).rstrip()
        m = _STEP_LINE.search(line)
        if not m:
            continue
        metrics = steps.setdefault(int(m.group(1)), {})
        for part in m.group(2).split(" - "):
            key, sep, value = part.rpartition(":")
            if sep and key.strip():
                metrics[key.strip()] = _number(value)
    return steps


def missing_metrics(steps: dict[int, dict], want_steps: list[int], keys: list[str]) -> list[str]:
    """'step N: key' for every wanted step/key the log lacks ('step N' when the step is missing altogether)."""
    out = []
    for step in want_steps:
        if step not in steps:
            out.append(f"step {step}")
            continue
        out += [f"step {step}: {k}" for k in keys if k not in steps[step]]
    return out


def verl_dataset_rows(split: str, count: int, data_source: str = "openai/gsm8k") -> list[dict]:
    """GSM8K-style rows as verl's RLHFDataset and default reward (`#### <answer>`, data_source openai/gsm8k) read.

    Every question sums to 42, the ground truth. Short on purpose: with the chat template they stay well under
    the test's max_prompt_length with the tiny tokenizer.
    """
    rows = []
    for i in range(count):
        a = (7 * i + (0 if split == "train" else 3)) % 40 + 1
        rows.append({
            "data_source": data_source,
            "prompt": [{"role": "user", "content": f"What is {a} + {42 - a}? Answer after \"####\"."}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": "42"},
            "extra_info": {"split": split, "index": i},
        })
    return rows


# A minimal chat template for the tiny tokenizer (verl applies the tokenizer's chat template to `prompt`).
CHAT_TEMPLATE = ("{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def run_logged(cmd: list, log_path: Path, timeout: float, env: dict[str, str] | None = None,
               cwd: Path | None = None) -> Ran:
    """Run `cmd` in its own process group, its output streamed to `log_path`; kill the group at the timeout."""
    import signal

    log_path = Path(log_path)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(a) for a in cmd], stdout=log, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **(env or {})}, cwd=str(cwd or tempfile.gettempdir()),
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            log.write(f"\n[killed after {timeout:.0f} s]\n")
    return Ran([str(a) for a in cmd], proc.returncode, log_path.read_text(errors="replace"))


def generated_tokens(ran: Ran, model: Path, what: str, per_prompt: int = 8) -> list[list[int]]:
    """The token ids vllm_generate.py printed; a failure unless it ran, gave per_prompt tokens for each of its two
    prompts, and every id is inside the model's vocabulary."""
    assert ran.returncode == 0 and ran.results, ran.explain(f"{what} failed")
    token_ids = ran.results[0]["token_ids"]
    vocab = json.loads((Path(model) / "config.json").read_text())["vocab_size"]
    assert [len(ids) for ids in token_ids] == [per_prompt, per_prompt], ran.explain(f"expected {per_prompt} tokens per prompt")
    assert all(0 <= t < vocab for ids in token_ids for t in ids), ran.explain("token ids outside the vocabulary")
    return token_ids
