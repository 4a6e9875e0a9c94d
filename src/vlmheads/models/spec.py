"""``ModelSpec``: which model a job runs and how, as one value from the command line to the loaded model.

    spec = ModelSpec.of(args)            # a new run: from the parsed options (or ModelSpec(model=..., ...))
    spec = ModelSpec.of(config)          # --resume: from the run's own config.json, never the command line
    spec.check()                         # every check that needs no weights (device, dtype, map, caps, path)
    loaded, threads = spec.load()        # the model, and the thread choice metadata.json records

Its fields are the model options a job's config records (``runs.ModelOptions`` and ``model``):
``spec.options()`` is what a config is built from, so the options are written in one place and read back
from there. Under a launcher (``vlmheads.parallel``) ``load`` puts each rank on its own GPU, or its
device map on its own block of the node's GPUs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property
from pathlib import Path

from .. import parallel
from ..errors import InputError


@dataclass(frozen=True)
class ModelSpec:
    model: str = "organism"  # 'organism', 'organism-competent', a HF id or a local model directory
    device: str = "cpu"
    dtype: str | None = None  # None: the checkpoint's own (float32 on a CPU without fast kernels for it)
    device_map: str | None = None  # auto | balanced | sequential: one model over several devices
    max_memory: str | None = None  # "0=70GiB,cpu=120GiB": caps per device for the device map
    attn_implementation: str | None = None
    threads: int | None = None  # torch CPU threads (None: chosen from the free cores)
    allow_random_init: bool = False  # load weights that do not cover the model (recorded)
    threads_reason: str = "--threads"  # what set ``threads`` (a resumed run: "the resumed run's")

    @classmethod
    def of(cls, source) -> "ModelSpec":
        """The spec held by any object with these attributes: parsed arguments, or a job's config."""
        names = [f.name for f in fields(cls) if f.name != "threads_reason"]
        return cls(**{name: getattr(source, name) for name in names if hasattr(source, name)})

    def resumed(self, metadata: dict | None) -> "ModelSpec":
        """The spec of a run being resumed: a thread count that was chosen automatically is the one the run
        used (its metadata.json), since another count can change the last bits of the results."""
        used = (metadata or {}).get("threads") or {}
        if self.threads is None and isinstance(used.get("threads"), int):
            return replace(self, threads=used["threads"], threads_reason="the resumed run's")
        return self

    def options(self) -> dict:
        """The config fields it fills (``runs.ModelOptions`` and ``model``)."""
        out = asdict(self)
        out.pop("threads_reason")
        return out

    @cached_property
    def source(self):
        """The model's source (a local directory, or a hub id), checked to exist (``check_model_source``; once
        per spec: check, declared_geometry and rendering all read it)."""
        from .loading import check_model_source

        return check_model_source(self.model)

    def check(self) -> None:
        """Every check that needs no weights: device, dtype, device map and its caps, attention, model source."""
        from .loading import (ATTENTION_IMPLEMENTATIONS, _resolve_dtype, check_device, check_device_map,
                              parse_max_memory)

        check_device(self.device)
        _resolve_dtype(self.dtype)
        if self.device_map is not None:
            check_device_map(self.device_map)
        if self.max_memory is not None:
            if self.device_map is None:
                raise InputError("--max-memory caps what --device-map places on each device: add --device-map auto")
            parse_max_memory(self.max_memory)
        if self.attn_implementation is not None and self.attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise InputError(f"unknown --attn-implementation {self.attn_implementation!r}; use one of "
                             f"{', '.join(ATTENTION_IMPLEMENTATIONS)}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1, got {self.threads}")
        self.source

    def declared_geometry(self) -> tuple[int, int] | None:
        """``(n_layers, n_heads)`` the model's config declares, read without weights (None: it does not say)."""
        from .identity import declared_geometry

        return declared_geometry(self.source)

    def rendering(self) -> dict | None:
        """The organism rendering a local model declares in its config.json (``vlmheads_rendering``), read
        before the model loads; None (clean scenes) for models that declare none and for hub ids."""
        from ..world.scenes import declared_rendering

        source = self.source
        return declared_rendering(Path(source) / "config.json") if isinstance(source, Path) else None

    def load(self):
        """``(LoadedModel, threads choice)``: the threads set first (``machine.choose_threads``), then the model,
        on this rank's device (``parallel.rank_device``) or, with a device map under a launcher, over this
        rank's block of GPUs (``parallel.rank_max_memory``)."""
        from ..machine import choose_threads
        from .loading import load_model, parse_max_memory

        cpu = self.device_map is None and self.device == "cpu"
        threads = choose_threads(self.threads, "cpu" if cpu else "accelerator", reason=self.threads_reason)
        max_memory = parse_max_memory(self.max_memory)
        if self.device_map is not None and parallel.world().size > 1:
            import torch

            max_memory = parallel.rank_max_memory(max_memory, torch.cuda.device_count(),
                                                  lambda i: torch.cuda.get_device_properties(i).total_memory)
        loaded = load_model(self.model, device=parallel.rank_device(self.device), dtype=self.dtype,
                            device_map=self.device_map, max_memory=max_memory,
                            attn_implementation=self.attn_implementation, allow_random_init=self.allow_random_init)
        return loaded, threads
