"""pick: the best row (image) for a GPU, a driver and version wishes, and why every other row was left out.

Best = among the rows that run on the GPU (its capability covered by the torch wheel's architectures) with the
driver (new enough for the row's CUDA) and that match the version wishes: the newest vLLM, then the newest verl.
A known vLLM failure on that GPU (knowledge/vllm-advice.yaml, e.g. full CUDA graphs on FlashAttention-2) is a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from imagematrix.knowledge import gpus, training, vllm_advice
from imagematrix.model.errors import InputError
from imagematrix.model.matrix import Matrix, Row


@dataclass
class Choice:
    row: Row
    notes: list[str] = field(default_factory=list)  # warnings that do not exclude (compat driver, no bf16)


@dataclass
class Pick:
    best: Choice | None
    candidates: list[Choice]
    excluded: dict[str, list[str]]  # row id -> reasons


def wish(text: str, what: str) -> SpecifierSet:
    """'>=0.8', '0.5' (meaning 0.5.*), '0.10.0' -> a specifier set."""
    text = text.strip()
    if text and text[0].isdigit():
        text = f"=={text}" if text.count(".") >= 2 else f"=={text}.*"
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise InputError(f"--{what} {text!r} is not a version or specifier",
                         fix=f"write e.g. --{what} 0.5 or --{what} '>=0.8'") from None


def pick(matrix: Matrix, gpu: str | None, driver: str | None = None, vllm: str | None = None,
         verl: str | None = None) -> Pick:
    cap = gpus.capability(gpu) if gpu else None
    specs = {"vllm": wish(vllm, "vllm") if vllm else None, "verl": wish(verl, "verl") if verl else None}
    candidates, excluded = [], {}
    for row in matrix.rows:
        reasons, notes = [], []
        for key, spec in specs.items():
            if spec is not None and not spec.contains(getattr(row, key), prereleases=True):
                reasons.append(f"{key} {getattr(row, key)} is not {spec}")
        if cap is not None:
            archs = gpus.torch_arch_list(row.torch, row.cuda)
            if archs is None:
                notes.append(f"arch coverage of torch {row.torch}+cu{row.cuda.replace('.', '')} unknown")
            elif not gpus.covers(archs, cap):
                reasons.append(f"torch {row.torch} (CUDA {row.cuda}) has kernels for {' '.join(archs)}, not "
                               f"{gpus.format_capability(cap)}: \"no kernel image is available for execution on "
                               "the device\"")
            if not gpus.bf16_supported(cap):
                notes.append(f"{gpus.format_capability(cap)} has no bf16 and no FlashAttention-2: use dtype=float16 "
                             "and a non-FLASH_ATTN attention backend")
            for match in vllm_advice.matching(row.vllm, [cap], gpu_only=True):
                notes.append(f"vLLM {row.vllm} on {gpus.format_capability(cap)} [{match.advice.id}]: "
                             + vllm_advice.one_line(match.advice))
        if driver:
            status = gpus.driver_status(driver, row.cuda)
            if status == "too-old":
                full = gpus.min_driver(row.cuda)
                compat = gpus.min_driver_compat(row.cuda)
                reasons.append(f"CUDA {row.cuda} needs driver >= {compat}"
                               + (f" (>= {full} for full support)" if full != compat else "")
                               + f", the host has {driver}")
            elif status == "compat":
                notes.append(f"driver {driver} runs CUDA {row.cuda} only under minor-version compatibility "
                             f"(>= {gpus.min_driver(row.cuda)} for full support, PTX JIT included)")
        how = training.attention(row)
        if how.attn_implementation != "flash_attention_2":
            notes.append(f"verl training: {how.note}")
        if reasons:
            excluded[row.id] = reasons
        else:
            candidates.append(Choice(row, notes))
    candidates.sort(key=lambda c: (Version(c.row.vllm), Version(c.row.verl)), reverse=True)
    return Pick(candidates[0] if candidates else None, candidates, excluded)


def pull_line(repository: str, row: Row) -> str:
    return f"docker pull {repository}:{row.id}"


def verify_line(repository: str, row: Row) -> str:
    return f"python build.py verify {repository}:{row.id} --key cosign.pub"
