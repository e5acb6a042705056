"""A job's secrets as Prefect Secret blocks: the literals dockyard keeps saved,
references checked before anything is created, and values resolved only for
the containers (dockyard/secrets.py says what counts as a secret)."""

from __future__ import annotations

from collections.abc import Collection
from typing import cast

from dockyard import script_mode, secrets
from dockyard.errors import DockyardError, FieldProblem
from dockyard.spec import TrainingJobSpec


def save(literals: dict[str, str]) -> None:
    """Store each value in the Secret block named by its key (dockyard.secrets.as_references)."""
    from prefect.blocks.system import Secret

    for block, value in literals.items():
        Secret(value=value).save(block, overwrite=True)


def _references(spec: TrainingJobSpec) -> list[tuple[str, str, str]]:
    """(map, key, block) of every reference in the spec."""
    found = []
    for kind in secrets.KINDS:
        for key, value in getattr(spec, kind).items():
            block = secrets.block_of(value)
            if block is not None:
                found.append((kind, key, block))
    return found


def problems(spec: TrainingJobSpec, pending: Collection[str] = ()) -> list[FieldProblem]:
    """A problem for each reference to a Secret block that Prefect does not have
    (blocks in `pending` are about to be saved)."""
    return [
        FieldProblem(
            f"{kind}.{key}",
            f"references the Prefect Secret block '{block}', which does not exist",
            f"create it (`prefect block create secret`, or Secret(value=...).save('{block}') in Python) "
            "or give the value itself",
        )
        for kind, key, block in _references(spec)
        if block not in pending and _load(block) is None
    ]


def _load(block: str) -> str | None:
    from prefect.blocks.system import Secret

    try:
        value = cast("Secret", Secret.load(block)).get()  # a block, not a coroutine, when called from sync code
    except ValueError:  # Prefect's answer for a block that is not there
        return None
    return value if isinstance(value, str) else str(value)


def resolved(spec: TrainingJobSpec) -> TrainingJobSpec:
    """`spec` with every reference replaced by its block's value: for the containers alone.

    Raises:
        DockyardError: a referenced block went away after the job was validated.
    """
    changed: dict[str, dict[str, str]] = {}
    for kind, key, block in _references(spec):
        value = _load(block)
        if value is None:
            raise DockyardError(f"{kind}.{key}: the Prefect Secret block '{block}' is gone — create it again")
        changed.setdefault(kind, dict(getattr(spec, kind)))[key] = value
    return spec.model_copy(update=changed) if changed else spec


def values(spec: TrainingJobSpec) -> frozenset[str]:
    """The secret values the job's containers get: to keep out of the logs.

    Raises:
        DockyardError: a referenced block is gone.
    """
    plain = resolved(spec)
    found = set()
    for kind in secrets.KINDS:
        for key, value in getattr(spec, kind).items():
            if secrets.is_secret_name(key) or secrets.block_of(value) is not None:
                found.add(getattr(plain, kind)[key])
                found.add(str(script_mode.decoded(getattr(plain, kind)[key])))  # the SDK's JSON-encoded strings
    return frozenset(v for v in found if len(v) >= 4)  # masking shorter strings would mangle ordinary text
