"""Which of a job's hyperparameters and environment entries are secrets, and
how a spec names a Prefect Secret block instead of holding a value.

A name says secret when one of its words (split at `_`, `-`, `.`, and between
camelCase) is password, passwd, passphrase, secret, credential(s) or apikey,
or when its last word is token or key, but for a tokenizer's tokens and
keys of data (`pad_token`, `sort_key`): `api_key`, `DB_PASSWORD`, `HF_TOKEN`,
`hfToken` are secrets; `max_tokens`, `eos_token_id`, `keyword` are not. A
value may be a reference to a Prefect Secret block, in Prefect's own template
syntax:

    hyperparameters:
      wandb_api_key: "{{ prefect.blocks.secret.wandb-api-key }}"

dockyard stores a secret-named literal as a Secret block of its own when the
job is submitted (infra/secrets.py), so job records, the catalog, Prefect's
flow-run parameters and the endpoint's answers hold only the reference; the
containers get the value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from dockyard.script_mode import decoded

if TYPE_CHECKING:
    from dockyard.spec import TrainingJobSpec

SECRET_WORDS = frozenset({"password", "passwd", "passphrase", "secret", "credential", "credentials", "apikey"})
# `token` and `key` say secret as a name's last word (HF_TOKEN, api_key, OPENAI_API_KEY), not
# after these (a tokenizer's pad_token, a sort_key) nor before another (eos_token_id, key_size)
NOT_SECRET_BEFORE = {
    "token": frozenset({"pad", "eos", "bos", "unk", "sep", "cls", "mask", "special", "start", "end", "stop"}),
    "key": frozenset({"sort", "label", "partition", "group", "join", "primary", "foreign", "dict", "hash", "metric"}),
}
MASK = "********"
REFERENCE = re.compile(r"^\{\{\s*prefect\.blocks\.secret\.(?P<block>[a-z0-9][a-z0-9-]*)\s*\}\}$")
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_MAP_NAMES = ("hyperparameters", "HyperParameters", "static_hyper_parameters", "StaticHyperParameters", "environment",
              "Environment")  # fmt: skip
KINDS = ("hyperparameters", "environment")  # the spec's maps whose entries may be secrets


def is_secret_name(name: str) -> bool:
    words = [w.lower() for w in _WORDS.findall(name)]
    if any(w in SECRET_WORDS for w in words):
        return True
    if len(words) >= 1 and words[-1] in NOT_SECRET_BEFORE:
        return len(words) == 1 or words[-2] not in NOT_SECRET_BEFORE[words[-1]]
    return False


def _entries(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The entries of a job document's maps that may hold secrets (spec or request, either naming)."""
    for field in _MAP_NAMES:
        entries = doc.get(field)
        if isinstance(entries, dict):
            yield from ((str(k), str(v)) for k, v in entries.items())


def mentioned(doc: dict[str, Any]) -> bool:
    """Whether a job document (spec or request, either naming) has a secret-named entry or a reference."""
    return any(is_secret_name(k) or block_of(v) is not None for k, v in _entries(doc))


def holds_literals(doc: dict[str, Any]) -> bool:
    """Whether a job document (spec or request, either naming) has a secret-named entry holding its value."""
    return any(is_literal_secret(k, v) for k, v in _entries(doc))


def block_of(value: str) -> str | None:
    """The Secret block a value references (as written, or JSON-encoded as the SageMaker SDK
    sends strings), or None for a literal."""
    found = REFERENCE.match(decoded(value.strip()) or "")
    return found["block"] if found else None


def reference(block: str) -> str:
    return f"{{{{ prefect.blocks.secret.{block} }}}}"


def block_name(owner: str, kind: str, key: str, resource: str = "training-job") -> str:
    """The block dockyard keeps a literal secret in: lowercase letters, digits and dashes
    (Prefect's rule for block names), unique per resource (a training or tuning job), map and key."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{owner}-{key}".lower()).strip("-")[:60].rstrip("-")
    digest = hashlib.sha256(f"{resource}\0{owner}\0{kind}\0{key}".encode()).hexdigest()[:8]
    return f"dockyard-{slug}-{digest}"


def is_literal_secret(key: str, value: str) -> bool:
    return is_secret_name(key) and block_of(value) is None


def referenced(
    owner: str, maps: dict[str, dict[str, str]], resource: str = "training-job"
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
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
                block = block_name(owner, kind, key, resource)
                literals[block] = str(value)
                # JSON-encoded stays JSON-encoded: the SDK's attach() decodes each value it reads back
                value = json.dumps(reference(block)) if decoded(str(value)) != value else reference(block)
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
