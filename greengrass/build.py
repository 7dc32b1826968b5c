"""``edgecv component build``: recipes and artifacts for AWS IoT Greengrass v2, laid out as GDK's
``greengrass-build/`` (``recipes/`` and ``artifacts/<component>/<version>/``, what ``greengrass-cli deployment
create --recipeDir --artifactDir`` and ``run-local`` take), plus a GDK project (``gdk/<name>/gdk-config.json``
and ``recipe.yaml``) per component for ``gdk component publish``.

- One model component per compiled model (``com.edgecv.model.<model>``), one manifest per CPU: each
  ``edgecv compile`` artifact (the folder or its ``.tar.gz``) becomes a ZIP the nucleus unpacks (Greengrass
  unpacks ZIP only), checked against its manifest's checksums first.
- The counter component (``com.edgecv.Counter``): ``edgecv-runtime.zip`` holds the box wheels (this edgecv and
  the TVM runtime without the compiler, one per CPU the counter declares: ``edgecv/boxwheels.py``) and the box
  lock as ``constraints.txt``; Install makes a venv of ``edgecv[edge,greengrass]`` from them.
- Every recipe written is checked as ``run-local`` checks it before it runs anything.
"""
from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgecv.boxwheels import box_lock, box_wheels
from edgecv.edge.artifact import MANIFEST, Manifest, read_manifest, verify_files
from edgecv.edge.config import RunConfig, load_config
from edgecv.edge.errors import ArtifactError, EdgecvError
from edgecv.greengrass.recipes import (COUNTER_ARCHS, MODEL_PREFIX, PLATFORMS, RUNTIME_ZIP, SEMVER, check_build,
                                       counter_recipe, dump_recipe, model_recipe)
from edgecv.greengrass.settings import COMPONENT, default_configuration



@dataclass
class BuildResult:
    out: Path
    version: str
    counter: str
    models: dict[str, list[str]]     # model component -> CPU architectures
    files: list[Path]


def _unpack_artifact(path: Path, scratch: Path) -> Path:
    """An artifact folder, or an ``edgecv compile`` ``.tar.gz`` unpacked into ``scratch``."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.name.endswith(".tar.gz") and path.is_file():
        target = scratch / path.name[: -len(".tar.gz")]
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            for m in members:
                if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in Path(m.name).parts:
                    raise ArtifactError(f"{path}: unexpected member {m.name!r}", "pass an archive made by edgecv compile")
            options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(scratch / "unpacked", **options)
        roots = [p for p in (scratch / "unpacked").iterdir() if (p / MANIFEST).is_file()]
        if len(roots) != 1:
            raise ArtifactError(f"{path} does not hold one artifact folder", "pass an archive made by edgecv compile")
        roots[0].rename(target)
        shutil.rmtree(scratch / "unpacked")
        return target
    raise ArtifactError(f"artifact not found: {path}", "pass a folder made by `edgecv compile --out`, or its .tar.gz")


def _zip_artifact(folder: Path, manifest: Manifest, dest: Path) -> None:
    """The artifact's files (those the manifest lists, plus the manifest) at the root of a ZIP."""
    names = sorted(set(manifest.files) | {MANIFEST})
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in names:
            z.write(folder / name, arcname=name)


def _runtime_zip(dest: Path, wheel: Path | None, archs: list[str], scratch: Path) -> str:
    """``edgecv-runtime.zip``: the edgecv wheel, ``edgecv-tvm-runtime`` for each of ``archs`` (Install's pip finds
    the one for its CPU with ``--find-links``) and the box lock as ``constraints.txt``; returns the edgecv
    wheel's file name."""
    wheels = box_wheels(scratch / "wheels", archs, wheel)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for path in wheels:
            z.write(path, arcname=path.name)
        z.writestr("constraints.txt", box_lock())
    return wheels[0].name


def _group_models(artifacts: list[Path], scratch: Path) -> dict[str, dict[str, tuple[Path, Manifest]]]:
    """model name -> CPU architecture -> (artifact folder, manifest), each checked against its checksums."""
    models: dict[str, dict[str, tuple[Path, Manifest]]] = {}
    for i, given in enumerate(artifacts):
        folder = _unpack_artifact(Path(given), scratch / f"artifact-{i}")
        manifest = read_manifest(folder)
        verify_files(folder, manifest)
        if manifest.task != "detection":
            raise ArtifactError(f"{given} is a {manifest.task} model", "the counter needs a detector artifact")
        by_arch = models.setdefault(manifest.model, {})
        arch = manifest.target.arch
        if arch in by_arch:
            raise ArtifactError(f"two {manifest.model} artifacts for {arch} ({by_arch[arch][1].target.name}, "
                                f"{manifest.target.name})", "a model component has one build per CPU architecture")
        shapes = {m.input.shape for _, m in by_arch.values()}
        if shapes and manifest.input.shape not in shapes:
            raise ArtifactError(f"{manifest.model} artifacts with different input shapes ({shapes.pop()} and "
                                f"{manifest.input.shape})", "compile every target at the same --input-size")
        by_arch[arch] = (folder, manifest)
    return models


def _gdk_projects(out: Path, recipes: dict[str, dict], version: str, wheel_zip: Path) -> None:
    """``gdk/<project>/``: one GDK project per component, for ``gdk component build && gdk component publish``
    (which uploads the artifacts to S3 and registers the component version in the cloud).

    The counter's is a ``zip`` project, as AWS's GDK templates: the folder ``edgecv-runtime/`` holds the wheel
    and the constraints, and GDK zips it into ``edgecv-runtime.zip``. A model component's ZIPs are built
    already: its project's custom build copies them into ``greengrass-build/``."""
    def write(folder: Path, component: str, build: dict, recipe: dict) -> None:
        folder.mkdir(parents=True)
        config = {"component": {component: {"author": "edgecv", "version": version, "build": build,
                                            "publish": {"bucket": "BUCKET_NAME", "region": "REGION"}}},
                  "gdk_version": "1.2.0"}
        (folder / "gdk-config.json").write_text(json.dumps(config, indent=2) + "\n")
        recipe = json.loads(json.dumps(recipe))
        for manifest in recipe["Manifests"]:
            for artifact in manifest.get("Artifacts", []):
                name = artifact["URI"].rsplit("/", 1)[-1]
                artifact["URI"] = f"s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/{name}"
        (folder / "recipe.yaml").write_text(dump_recipe(recipe))

    for component, recipe in recipes.items():
        if component == COMPONENT:
            folder = out / "gdk" / Path(RUNTIME_ZIP).stem
            write(folder, component, {"build_system": "zip"}, recipe)
            with zipfile.ZipFile(wheel_zip) as z:
                z.extractall(folder)
        else:
            copy = (f"cp ../../artifacts/{component}/{version}/*.zip greengrass-build/artifacts/{component}/{version}/"
                    " && cp recipe.yaml greengrass-build/recipes/")
            write(out / "gdk" / component, component, {"build_system": "custom",
                                                       "custom_build_command": ["sh", "-c", copy]}, recipe)


def build_component(artifacts: list[Path], out: Path, version: str = "1.0.0", config: Path | None = None,
                    source: str = "0", publish: str = "iotcore", bucket: str = "BUCKET_NAME",
                    wheel: Path | None = None) -> BuildResult:
    if not artifacts:
        raise EdgecvError("no artifact given", "pass --artifact DIR (an `edgecv compile --out` folder or its .tar.gz)")
    if not SEMVER.match(version):
        raise EdgecvError(f"--version {version!r} is not a semantic version", "use MAJOR.MINOR.PATCH, e.g. 1.0.0")
    run = load_config(config) if config else RunConfig()
    device = run.device if config and "device" in run.given else ""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "recipes").is_dir():
        raise EdgecvError(f"--out {out} exists and is not a component build", "choose a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        scratch = tmp / ".scratch"
        scratch.mkdir()
        models = _group_models([Path(a) for a in artifacts], scratch)
        (tmp / "recipes").mkdir()
        model_archs: dict[str, list[str]] = {}
        recipes: dict[str, dict] = {}
        for model, by_arch in models.items():
            component = MODEL_PREFIX + model
            folder = tmp / "artifacts" / component / version
            folder.mkdir(parents=True)
            builds = {}
            for arch, (artifact, manifest) in sorted(by_arch.items()):
                name = f"{model}-{manifest.target.name}.zip"
                _zip_artifact(artifact, manifest, folder / name)
                builds[arch] = name
            recipes[component] = model_recipe(component, version, model, builds, bucket)
            model_archs[component] = list(builds)
        model_component = next(iter(model_archs))            # the counter reads the first model given
        archs = [a for a in COUNTER_ARCHS if a in model_archs[model_component]]
        if not archs:
            raise EdgecvError(f"no counter for {', '.join(model_archs[model_component])}: the counter runs on "
                              f"{' and '.join(COUNTER_ARCHS)} (armv7 lacks TVM's Python bindings)",
                              "also pass an x86_64 or aarch64 artifact")
        runtime = tmp / "artifacts" / COMPONENT / version
        runtime.mkdir(parents=True)
        wheel_name = _runtime_zip(runtime / RUNTIME_ZIP, Path(wheel) if wheel else None, archs, scratch)
        recipes[COMPONENT] = counter_recipe(COMPONENT, version, model_component, version, wheel_name,
                                            default_configuration(run, source, publish, device), bucket, archs)
        for component, recipe in recipes.items():
            (tmp / "recipes" / f"{component}-{version}.yaml").write_text(dump_recipe(recipe))
        _gdk_projects(tmp, recipes, version, runtime / RUNTIME_ZIP)
        shutil.rmtree(scratch)
        check_build(tmp)                                      # what we wrote is what run-local accepts
        for path in tmp.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
        return BuildResult(out, version, COMPONENT, model_archs, files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def describe(result: BuildResult) -> str:
    lines = [f"{result.out}/"]
    lines += [f"  {f}" for f in result.files]
    models = "; ".join(f"{name} for {', '.join(PLATFORMS[a]['architecture'] for a in archs)}"
                       for name, archs in result.models.items())
    lines.append(f"{result.counter} {result.version} with {models}")
    lines.append(f"local deployment: sudo /greengrass/v2/bin/greengrass-cli deployment create "
                 f"--recipeDir {result.out.resolve()}/recipes --artifactDir {result.out.resolve()}/artifacts "
                 f"--merge \"{result.counter}={result.version}\"")
    lines.append(f"try it here first: edgecv component run-local --build {result.out}")
    return "\n".join(lines)


__all__ = ["build_component", "describe", "BuildResult"]
