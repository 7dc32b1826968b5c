"""The compiled-artifact format, defined once: ``compile/`` writes it, ``edge/`` checks and loads it.

An artifact is a folder: the compiled library (code, so it is checked before it is loaded), and
``manifest.json`` describing the model, its input preprocessing, its outputs and a sha256 per file.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgecv.edge.elf import host_arch, read_elf
from edgecv.edge.errors import ArtifactError

SCHEMA = "edgecv.artifact/1"
_PRESET_FOR_ARCH = {"x86_64": "x86_64", "aarch64": "aarch64", "armv7l": "armv7"}
MANIFEST = "manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    name: str = Field(description="graph input name")
    shape: tuple[int, int, int, int] = Field(description="(1, 3, H, W) for NCHW")
    dtype: Literal["float32"] = "float32"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    color: Literal["RGB", "BGR"] = Field(description="channel order the model expects")
    mean: tuple[float, float, float] = Field(description="per-channel mean, 0-255 pixel units")
    std: tuple[float, float, float] = Field(description="per-channel std, 0-255 pixel units")
    resize: Literal["stretch", "letterbox"] = Field(description="how a frame is fitted to the input")
    pad_value: float = 0.0

    @property
    def height(self) -> int:
        return self.shape[2] if self.layout == "NCHW" else self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[3] if self.layout == "NCHW" else self.shape[2]


class OutputSpec(_Strict):
    name: str
    shape: tuple[int, ...]
    dtype: Literal["float32"] = "float32"
    description: str = ""


class TargetSpec(_Strict):
    name: str = Field(description="preset name, e.g. x86_64, aarch64, armv7")
    arch: Literal["x86_64", "aarch64", "armv7l"]
    tvm: dict = Field(description="the TVM target the library was built for")


class DecodeSpec(_Strict):
    kind: Literal["boxes_scores", "id_score_box", "classification"]
    score_threshold: float = 0.01
    nms_iou: float = 0.45
    nms_topk: int = 400
    max_detections: int = 100


class Manifest(_Strict):
    schema_: Literal["edgecv.artifact/1"] = Field(SCHEMA, alias="schema")
    model: str
    task: Literal["detection", "classification"]
    target: TargetSpec
    input: InputSpec
    outputs: tuple[OutputSpec, ...]
    decode: DecodeSpec
    classes: tuple[str, ...]
    groups: str | None = Field(None, description="default class->group map in models/classes")
    library: str = Field(description="file name of the compiled library")
    params: str | None = Field(None, description="weights (.npz, in the order `main` takes them after the input); "
                                                 "None: embedded in the library")
    files: dict[str, str] = Field(description="file name -> sha256 of every file the artifact needs")
    weights: str = Field(description="where the weights came from")
    tuning: str | None = Field(None, description="sha256 of the tuning records used, if any")
    reference: dict[str, str] | None = Field(
        None, description="uncompiled copies of the same graph for reference backends (compile --keep-reference): "
                          "onnx -> file, mxnet_symbol -> file, mxnet_params -> file")
    tvm_version: str
    edgecv_version: str
    created: str

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2) + "\n"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> Manifest:
    """Parse ``folder/manifest.json``; every problem becomes one ``ArtifactError`` line."""
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise ArtifactError(f"artifact folder not found: {folder}", "pass a folder made by `edgecv compile --out`")
    if not path.is_file():
        raise ArtifactError(f"no {MANIFEST} in {folder}", "pass a folder made by `edgecv compile --out`")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc})", "recompile the artifact") from None
    schema = raw.get("schema") if isinstance(raw, dict) else None
    if schema != SCHEMA:
        raise ArtifactError(f"{path} has schema {schema!r}, this edgecv reads {SCHEMA!r}",
                            "recompile with this version of `edgecv compile`")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ArtifactError(f"{path} does not match {SCHEMA} ({problems})", "recompile the artifact") from None


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Check every listed file's sha256, and that the library is among them."""
    for name in filter(None, (manifest.library, manifest.params)):
        if name not in manifest.files:
            raise ArtifactError(f"{name} is not covered by the manifest's checksums", "recompile the artifact")
    for name, expected in manifest.files.items():
        path = Path(folder) / name
        if Path(name).name != name:
            raise ArtifactError(f"manifest lists a file outside the artifact: {name!r}", "recompile the artifact")
        if not path.is_file():
            raise ArtifactError(f"artifact file missing: {path}", "copy the whole artifact folder again")
        if sha256_file(path) != expected:
            raise ArtifactError(f"checksum mismatch for {path}: the artifact is corrupt or was modified",
                                "copy it again or recompile")


def check_architecture(folder: Path, manifest: Manifest, arch: str | None = None) -> None:
    """Refuse a library built for another CPU, by manifest and by its ELF header."""
    arch = arch or host_arch()
    library = Path(folder) / manifest.library
    try:
        elf = read_elf(library)
    except ValueError as exc:
        raise ArtifactError(f"{exc}: not a compiled library", "recompile the artifact") from None
    if elf.arch != manifest.target.arch:
        raise ArtifactError(f"{library} is built for {elf.arch} but its manifest says {manifest.target.arch}",
                            "recompile the artifact")
    if manifest.target.arch != arch:
        raise ArtifactError(f"artifact is built for {manifest.target.arch} (target {manifest.target.name}) "
                            f"but this machine is {arch}",
                            f"compile it for this CPU: edgecv compile {manifest.model} --target "
                            f"{_PRESET_FOR_ARCH.get(arch, arch)}")


def load_manifest(folder: Path, arch: str | None = None) -> Manifest:
    """Everything the edge runtime checks before it loads an artifact's code."""
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    check_architecture(folder, manifest, arch)
    return manifest
