"""Model descriptions from ``models/zoo.yaml`` (data), and exported-checkpoint pairs."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from edgecv.edge.errors import ModelError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    task: str
    description: str
    input_size: int
    resize: str
    color: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    groups: str | None
    symbol_file: Path | None = None  # an exported prefix-symbol.json, else a GluonCV model-zoo name

    @property
    def is_checkpoint(self) -> bool:
        return self.symbol_file is not None


@lru_cache(maxsize=1)
def _zoo() -> dict:
    return yaml.safe_load(resources.files("edgecv.models").joinpath("zoo.yaml").read_text())


def model_names() -> list[str]:
    return list(_zoo()["models"])


def _spec(name: str, entry: dict, **extra) -> ModelSpec:
    defaults = _zoo()["defaults"]["input"]
    inp = {**defaults, **entry.get("input", {})}
    return ModelSpec(name=name, family=entry["family"], task=entry["task"], description=entry["description"],
                     input_size=int(inp["size"]), resize=inp["resize"], color=inp["color"],
                     mean=tuple(inp["mean"]), std=tuple(inp["std"]), groups=entry.get("groups"), **extra)


def resolve_model(model: str) -> ModelSpec:
    """A model-zoo name, or the path of an exported ``prefix-symbol.json`` (params beside it)."""
    zoo = _zoo()["models"]
    if model in zoo:
        return _spec(model, zoo[model])
    path = Path(model)
    if path.name.endswith("-symbol.json") or path.suffix == ".json":
        if not path.is_file():
            raise ModelError(f"symbol file not found: {path}", "pass the prefix-symbol.json written by net.export()")
        name = path.name[: -len("-symbol.json")] if path.name.endswith("-symbol.json") else path.stem
        entry = {"family": "gluoncv-exported", "task": "detection", "description": f"exported checkpoint {path}",
                 "input": {"size": 512, "resize": "stretch"}, "groups": None}
        return _spec(name, entry, symbol_file=path)
    known = ", ".join(model_names())
    raise ModelError(f"unknown model {model!r}", f"use one of {known} (see `edgecv models`) or a prefix-symbol.json")
