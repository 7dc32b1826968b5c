"""Model descriptions from ``models/zoo.yaml`` (data), and exported-checkpoint pairs."""
from __future__ import annotations

from dataclasses import dataclass, field
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
    onnx_file: Path | None = None    # an ONNX detector compiled as it is (family = its decoder plug-in)
    classes_file: Path | None = None
    decode: dict = field(default_factory=dict, hash=False)  # the decoder's options (DecodeSpec fields)

    @property
    def is_checkpoint(self) -> bool:
        return self.symbol_file is not None

    @property
    def is_onnx(self) -> bool:
        return self.onnx_file is not None

    @property
    def fixed_size(self) -> bool:
        """A shipped checkpoint or ONNX graph takes only the input size it was made for."""
        return self.is_onnx or (self.is_checkpoint and self.family != "gluoncv-exported")

    @property
    def params_file(self) -> Path | None:
        """The weights beside a checkpoint's ``prefix-symbol.json``."""
        if self.symbol_file is None or not self.symbol_file.name.endswith("-symbol.json"):
            return None
        return self.symbol_file.with_name(self.symbol_file.name[: -len("-symbol.json")] + "-0000.params")

    @property
    def brings_weights(self) -> bool:
        """Shipped with its weights (no --weights/--pretrained/--random-weights needed)."""
        return self.is_checkpoint or self.is_onnx

    def class_names(self) -> tuple[str, ...] | None:
        if self.classes_file is None:
            return None
        return tuple(line.strip() for line in self.classes_file.read_text().splitlines() if line.strip())


@lru_cache(maxsize=1)
def _zoo() -> dict:
    return yaml.safe_load(resources.files("edgecv.models").joinpath("zoo.yaml").read_text())


def model_names() -> list[str]:
    return list(_zoo()["models"])


def _models_dir() -> Path:
    return Path(str(resources.files("edgecv.models")))


def _spec(name: str, entry: dict, **extra) -> ModelSpec:
    defaults = _zoo()["defaults"]["input"]
    inp = {**defaults, **entry.get("input", {})}
    shipped = {key: _models_dir() / entry[name_in_zoo] for key, name_in_zoo in
               (("symbol_file", "checkpoint"), ("onnx_file", "onnx"), ("classes_file", "classes")) if name_in_zoo in entry}
    return ModelSpec(name=name, family=entry["family"], task=entry["task"], description=entry["description"],
                     input_size=int(inp["size"]), resize=inp["resize"], color=inp["color"],
                     mean=tuple(inp["mean"]), std=tuple(inp["std"]), groups=entry.get("groups"),
                     decode=dict(entry.get("decode") or {}), **{**shipped, **extra})


def resolve_model(model: str, decoder: str | None = None) -> ModelSpec:
    """A model-zoo name, an ONNX detector ``PATH.onnx`` (with ``decoder``, its family's plug-in), or the path of an
    exported ``prefix-symbol.json`` (params beside it)."""
    zoo = _zoo()["models"]
    if model in zoo:
        if decoder is not None and decoder != zoo[model]["family"]:
            raise ModelError(f"{model} is decoded as {zoo[model]['family']}, not {decoder}", "drop --decoder")
        return _spec(model, zoo[model])
    path = Path(model)
    if path.suffix == ".onnx":
        return _onnx_spec(path, decoder)
    if path.name.endswith("-symbol.json") or path.suffix == ".json":
        if not path.is_file():
            raise ModelError(f"symbol file not found: {path}", "pass the prefix-symbol.json written by net.export()")
        name = path.name[: -len("-symbol.json")] if path.name.endswith("-symbol.json") else path.stem
        entry = {"family": "gluoncv-exported", "task": "detection", "description": f"exported checkpoint {path}",
                 "input": {"size": 512, "resize": "stretch"}, "groups": None}
        return _spec(name, entry, symbol_file=path)
    known = ", ".join(model_names())
    raise ModelError(f"unknown model {model!r}",
                     f"use one of {known} (see `edgecv models`), a prefix-symbol.json or a model.onnx with --decoder")


def _onnx_spec(path: Path, decoder: str | None) -> ModelSpec:
    from edgecv.compile.onnx_input import ONNX_FAMILIES  # the decoder plug-ins (needs onnx: the compile side)

    if not path.is_file():
        raise ModelError(f"ONNX file not found: {path}", "pass the path of an ONNX detector")
    if decoder not in ONNX_FAMILIES:
        raise ModelError(f"{path} needs a decoder" if decoder is None else f"unknown decoder {decoder!r}",
                         f"pass --decoder with one of {', '.join(ONNX_FAMILIES)}")
    family = ONNX_FAMILIES[decoder]
    entry = {"family": decoder, "task": family.task, "description": f"ONNX detector {path}",
             "input": {"size": family.input_size(path), **family.default_input}, "groups": family.default_groups}
    return _spec(path.stem, entry, onnx_file=path)
