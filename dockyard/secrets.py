"""Which of a job's hyperparameters and environment entries are secrets, and
how a spec names a Prefect Secret block instead of holding a value.

A name says secret when one of its words (split at `_`, `-`, `.`, and between
camelCase) is password, passwd, token, secret, key, apikey, credential or
credentials: `api_key`, `DB_PASSWORD`, `hfToken`; not `max_tokens` or
`keyword`. A value may be a reference to a Prefect Secret block, in Prefect's
own template syntax:

    hyperparameters:
      wandb_api_key: "{{ prefect.blocks.secret.wandb-api-key }}"

dockyard stores a secret-named literal as a Secret block of its own when the
job is submitted (infra/secrets.py), so job records, the catalog, Prefect's
flow-run parameters and the endpoint's answers hold only the reference; the
containers get the value.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dockyard.spec import TrainingJobSpec

SECRET_WORDS = frozenset({"password", "passwd", "token", "secret", "key", "apikey", "credential", "credentials"})
MASK = "********"
REFERENCE = re.compile(r"^\{\{\s*prefect\.blocks\.secret\.(?P<block>[a-z0-9][a-z0-9-]*)\s*\}\}$")
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
KINDS = ("hyperparameters", "environment")  # the spec's maps whose entries may be secrets


def is_secret_name(name: str) -> bool:
    return any(word.lower() in SECRET_WORDS for word in _WORDS.findall(name))


def block_of(value: str) -> str | None:
    """The Secret block a value references, or None for a literal."""
    found = REFERENCE.match(value.strip())
    return found["block"] if found else None


def reference(block: str) -> str:
    return f"{{{{ prefect.blocks.secret.{block} }}}}"


def block_name(job: str, kind: str, key: str) -> str:
    """The block dockyard keeps a job's literal secret in: lowercase letters, digits and
    dashes (Prefect's rule for block names), unique per job, map and key."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{job}-{key}".lower()).strip("-")[:60].rstrip("-")
    digest = hashlib.sha256(f"{job}\0{kind}\0{key}".encode()).hexdigest()[:8]
    return f"dockyard-{slug}-{digest}"


def is_literal_secret(key: str, value: str) -> bool:
    return is_secret_name(key) and block_of(value) is None


def referenced(owner: str, maps: dict[str, dict[str, str]]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The maps that hold literal secrets, each such literal replaced by a reference to the
    block dockyard keeps it in (named for `owner`, the map and the key), and those blocks' values."""
    changed: dict[str, dict[str, str]] = {}
    literals: dict[str, str] = {}
    for kind, entries in maps.items():
        if not any(is_literal_secret(k, str(v)) for k, v in entries.items()):
            continue
        changed[kind] = {}
        for key, value in entries.items():
            if is_literal_secret(key, str(value)):
                block = block_name(owner, kind, key)
                literals[block] = str(value)
                value = reference(block)
            changed[kind][key] = value
    return changed, literals


def as_references(spec: TrainingJobSpec) -> tuple[TrainingJobSpec, dict[str, str]]:
    """`spec` with each secret-named literal replaced by a reference to the block dockyard
    keeps it in, and those blocks' values by name (for infra.secrets.save)."""
    changed, literals = referenced(spec.training_job_name, {kind: getattr(spec, kind) for kind in KINDS})
    return (spec.model_copy(update=changed) if changed else spec), literals


def masked(entries: Mapping[str, str]) -> dict[str, str]:
    """`entries` with the literal values of secret-named keys masked (references stay: they hold no secret)."""
    return {k: MASK if is_literal_secret(k, v) else v for k, v in entries.items()}


def mask_text(text: str, values: frozenset[str]) -> str:
    """`text` with every occurrence of a secret value masked."""
    for value in sorted(values, key=len, reverse=True):
        if value:
            text = text.replace(value, MASK)
    return text
