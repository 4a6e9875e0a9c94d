"""What a model on disk is, read before it loads: its config's digest, a digest of its weight files, and
which weights its modules did not get when it loaded.

A locate run records ``source_identity`` of the model it ran on; ``heads.intervene`` and ``heads.flow``
compare it with the model they are given before loading that model, so heads found on one model are
never used on another by accident (``organism`` and ``organism-competent`` share a config: only their
weights tell them apart).

The weights digest reads each weight file's name and size, its first 64 KiB (a safetensors header: every
tensor's name, dtype, shape and offset) and 16 evenly spaced 4 KiB samples of the rest: a few hundred KiB
for a 15 GB checkpoint, and a changed, cut or retrained file changes it with near certainty. It is a
label, not a checksum of every byte (``runs.load_torch_checked`` is that, for the files a run writes).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterable

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_HEAD_BYTES, _SAMPLES, _SAMPLE_BYTES = 1 << 16, 16, 1 << 12


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a saved model directory (sorted; shards included, indexes and optimizer states not)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                  and not p.name.startswith(("optimizer", "scheduler", "training_args", ".")))


def config_digest(config_path: Path) -> str:
    """sha256 (16 hex digits) of a config.json's content as JSON (key order, spacing and the
    ``transformers_version`` that saved it do not count)."""
    data = json.loads(Path(config_path).read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data.pop("transformers_version", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def weights_digest(files: Iterable[Path]) -> str | None:
    """A sampled digest (16 hex digits) of weight files (see the module docstring); None when there are none."""
    digest, seen = hashlib.sha256(), False
    for path in files:
        seen = True
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}\n".encode())
        with open(path, "rb") as f:
            digest.update(f.read(_HEAD_BYTES))
            if size > _HEAD_BYTES:
                step = (size - _HEAD_BYTES) // _SAMPLES
                for i in range(_SAMPLES):
                    f.seek(_HEAD_BYTES + i * step)
                    digest.update(f.read(_SAMPLE_BYTES))
    return digest.hexdigest()[:16] if seen else None


def hub_cached(name: str) -> bool:
    """Whether the hub cache holds ``name``'s config.json (looked up on disk, no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - a name the hub could never hold (bad characters) is simply not cached
        return False
    return isinstance(found, str)


def source_directory(source: str | Path) -> Path | None:
    """The local directory of a checked model source (``loading.check_model_source``): the directory
    itself, or a hub id's snapshot in the local cache; None when it is not on this machine."""
    if isinstance(source, Path):
        return source
    if not hub_cached(str(source)):
        return None
    from huggingface_hub import try_to_load_from_cache

    return Path(try_to_load_from_cache(str(source), "config.json")).parent


def source_identity(source: str | Path) -> dict | None:
    """``{"config_sha256", "weights_digest", "weight_files"}`` of a model on disk, read without loading
    it; None when its files are not on this machine (a hub id not in the cache)."""
    directory = source_directory(source)
    if directory is None or not (directory / "config.json").is_file():
        return None
    try:
        config = config_digest(directory / "config.json")
    except (OSError, ValueError):
        return None  # an unreadable config.json is refused, with its file named, when the model loads
    files = weight_files(directory)
    return {"config_sha256": config, "weights_digest": weights_digest(files),
            "weight_files": [p.name for p in files]}


def same_model(a: dict | None, b: dict | None) -> bool | None:
    """Whether two ``source_identity`` records are the same model (config and weights); None when
    either is unknown."""
    if not a or not b or not a.get("config_sha256") or not b.get("config_sha256"):
        return None
    return a["config_sha256"] == b["config_sha256"] and a.get("weights_digest") == b.get("weights_digest")


_LAYER = re.compile(r"^(.*?layers?)\.(\d+)\.")


def _layer_counts(keys: Iterable[str]) -> dict[str, set[int]]:
    """``{"model.language_model.layers": {2, 3}}``: the layer indices each stack of keys names."""
    stacks: dict[str, set[int]] = {}
    for key in keys:
        m = _LAYER.match(key)
        if m:
            stacks.setdefault(m.group(1), set()).add(int(m.group(2)))
    return stacks


def _examples(keys: list[str], n: int = 2) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def coverage_problem(info: dict, files: list[str], model_keys: Iterable[str] = ()) -> str | None:
    """What is wrong when a model's modules (``model_keys``: its state dict's names) and its weight files do
    not match (transformers' ``output_loading_info``: missing, unexpected and mismatched keys); None when
    they match exactly. A config whose layer count disagrees with the weights shows as whole layers left
    over (past the model's last layer) or missing (every weight of the model's last layers)."""
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ())
    mismatched = sorted(str(k[0] if isinstance(k, (tuple, list)) else k) for k in info.get("mismatched_keys") or ())
    if not (missing or unexpected or mismatched):
        return None
    if not files:
        return f"there are no weight files: all {len(missing)} weights are randomly initialised"
    where = ", ".join(files)
    own = _layer_counts(model_keys)  # stack -> the model's layer indices
    parts, explained = [], set()
    for stack, layers in sorted(_layer_counts(unexpected).items()):
        if stack in own and min(layers) > max(own[stack]):  # whole layers past the model's last one
            parts.append(f"config.json declares {max(own[stack]) + 1} layers in {stack}, but the weights hold "
                         f"{max(layers) + 1}")
            explained |= {k for k in unexpected if k.startswith(f"{stack}.")}
    model_keys = list(model_keys)
    for stack, layers in sorted(_layer_counts(missing).items()):
        whole = all(k in missing for k in model_keys if (m := _LAYER.match(k)) and m.group(1) == stack
                    and int(m.group(2)) >= min(layers))
        if whole and max(layers) == max(own.get(stack, {-1})) and min(layers) > 0:
            parts.append(f"config.json declares {max(layers) + 1} layers in {stack}, but the weights hold "
                         f"{min(layers)}")
            explained |= {k for k in missing if k.startswith(f"{stack}.")}
    rest_missing = [k for k in missing if k not in explained]
    rest_unexpected = [k for k in unexpected if k not in explained]
    if rest_missing:
        parts.append(f"{len(rest_missing)} weight(s) the model needs are not in {where} ({_examples(rest_missing)}): "
                     f"they would be randomly initialised")
    if rest_unexpected:
        parts.append(f"{len(rest_unexpected)} weight(s) in {where} fit nowhere in the model "
                     f"({_examples(rest_unexpected)})")
    if mismatched:
        parts.append(f"{len(mismatched)} weight(s) have another shape than the model's ({_examples(mismatched)})")
    return "; ".join(parts)


def declared_geometry(source: str | Path) -> tuple[int, int] | None:
    """``(n_layers, n_heads)`` of the text decoder as a checked model source's config declares them, read
    without weights; None when the config does not say (the adapter's check after loading still runs).
    A family this suite refuses is refused here (``registry.find_adapter``), as loading it would."""
    import transformers

    from .registry import find_adapter

    try:
        config = transformers.AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # load_model says why, with the file named
    find_adapter(config)
    text = config.get_text_config()
    layers, heads = getattr(text, "num_hidden_layers", None), getattr(text, "num_attention_heads", None)
    return (layers, heads) if isinstance(layers, int) and isinstance(heads, int) else None
