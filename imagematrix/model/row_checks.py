"""Checks across a row's keys once its defaults are filled in (model/matrix._complete): a debootstrap base's Python,
extras and overrides against the pins, and the lists (flash_attn_archs, verl_extras, gpus, gpus_jit). Each returns
every error it finds, naming the row and field."""

from __future__ import annotations

from typing import Any

from packaging.utils import canonicalize_name

from imagematrix.model import fields
from imagematrix.model.errors import InputError


def base_errors(merged: dict[str, Any], where: str) -> list[InputError]:
    """A debootstrap base must package the row's Python."""
    suite = merged["base"][len(fields.DEBOOTSTRAP_PREFIX):] if merged["base"].startswith(fields.DEBOOTSTRAP_PREFIX) else None
    if suite is None:
        return []
    pythons = [str(p) for p in fields.bootstrap_suites()[suite].get("python", [])]
    if merged["python"] in pythons:
        return []
    return [InputError(
        f"python {merged['python']} is not packaged by {suite} (it has {', '.join(pythons)})",
        where=f"{where}, field python",
        fix=f"set python to one of {', '.join(pythons)} or pick another base",
    )]


def pin_errors(merged: dict[str, Any], where: str) -> list[InputError]:
    """extras and overrides against the row's own pins and each other."""
    errors = []
    pinned = {canonicalize_name(fields.PIN_PACKAGES[f]): f for f in fields.PIN_FIELDS}
    for name in merged["extras"]:
        if canonicalize_name(name) in pinned:
            errors.append(InputError(
                f"extras pins {name!r}, which the row already pins as `{pinned[canonicalize_name(name)]}`",
                where=f"{where}, field extras.{name}", fix="pin it once, in its own key"))
    for name, override in merged["overrides"].items():
        field = pinned.get(canonicalize_name(name))
        if field and merged[field] != override.version:
            errors.append(InputError(
                f"override {name}=={override.version} disagrees with the row's `{field}: {merged[field]}`",
                where=f"{where}, field overrides.{name}", fix="make the override's version equal the row's pin"))
        extra = merged["extras"].get(name)
        if extra and extra != override.version:
            errors.append(InputError(
                f"override {name}=={override.version} disagrees with extras {name}=={extra}",
                where=f"{where}, field overrides.{name}", fix="make both versions equal"))
    return errors


def list_errors(merged: dict[str, Any], where: str) -> list[InputError]:
    """flash_attn_archs, verl_extras, gpus and gpus_jit checked, and made tuples in merged (sorted, where order
    does not matter)."""
    errors = []
    if merged["flash_attn_archs"] is not None:
        if not merged["flash_attn"]:
            errors.append(InputError("flash_attn_archs is set but the row pins no flash_attn",
                                     where=f"{where}, field flash_attn_archs",
                                     fix="remove flash_attn_archs, or pin flash_attn"))
        elif not merged["flash_attn_archs"] or len(set(merged["flash_attn_archs"])) != len(merged["flash_attn_archs"]):
            errors.append(InputError("flash_attn_archs must list each capability once, at least one",
                                     where=f"{where}, field flash_attn_archs", fix='write e.g. ["8.0", "9.0"]'))
        merged["flash_attn_archs"] = tuple(sorted(set(merged["flash_attn_archs"]), key=lambda c: tuple(map(int, c.split(".")))))
    extras_of_verl = [canonicalize_name(e) for e in merged["verl_extras"]]
    if "vllm" in extras_of_verl or len(set(extras_of_verl)) != len(extras_of_verl):
        errors.append(InputError("verl_extras lists an extra twice, or `vllm` (added unless the row overrides vllm)",
                                 where=f"{where}, field verl_extras", fix="list each other extra once, e.g. [verl-core]"))
    merged["verl_extras"] = tuple(sorted(set(extras_of_verl)))
    for key in ("gpus", "gpus_jit"):
        words = [fields.gpu_words(g) for g in merged[key]]
        if len(set(words)) != len(words):
            errors.append(InputError(f"{key} lists a GPU twice", where=f"{where}, field {key}",
                                     fix="list each GPU once, e.g. [H100, A100, L40S]"))
        merged[key] = tuple(merged[key])
    both = sorted({fields.gpu_words(g) for g in merged["gpus"]} & {fields.gpu_words(g) for g in merged["gpus_jit"]})
    if both:
        errors.append(InputError(f"{' '.join(both[0])} is in both gpus and gpus_jit",
                                 where=f"{where}, field gpus_jit",
                                 fix="keep it in gpus (native kernels required) or in gpus_jit (PTX JIT accepted)"))
    return errors
