"""Greengrass component recipes (format 2020-01-25): what edgecv writes, and the nucleus' rules for reading
them, used by ``component build`` (to check what it wrote) and ``component run-local`` (to run it).

- ``counter_recipe`` / ``model_recipe``: the two components, as AWS's DLR examples pair them: a model
  component with one build per platform in ``Manifests`` (ZIP artifacts, unpacked by the nucleus), and the
  counter with a HARD dependency on it, reading the model from the model component's decompressed artifacts.
- ``check_recipes``: required fields, manifests and lifecycles, artifact files, dependencies (declared, found,
  version ranges), recipe variables that resolve, and that every platform the counter declares is covered by
  the model component. Every problem is one line naming the recipe and the field.
- ``select_manifest``, ``lifecycle``, ``substitute``: how the nucleus picks the manifest for a platform, the
  lifecycle steps to run, and replaces recipe variables.
"""
from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from edgecv.boxwheels import ARCHS
from edgecv.edge.errors import EdgecvError

RECIPE_FORMAT = "2020-01-25"
# CPU architecture (manifest / ELF) -> Greengrass platform
PLATFORMS = {"x86_64": {"os": "linux", "architecture": "amd64"},
             "aarch64": {"os": "linux", "architecture": "aarch64"},
             "armv7l": {"os": "linux", "architecture": "arm"}}
# the counter runs where a runtime-only TVM wheel can be made from PyPI's apache-tvm (edgecv/boxwheels.py; armv7
# needs TVM built for armhf: docs/arm.md)
COUNTER_ARCHS = tuple(ARCHS)
LIFECYCLE_STEPS = ("Setenv", "Bootstrap", "Install", "Run", "Startup", "Shutdown", "Recover")
DEFAULT_TIMEOUTS = {"Bootstrap": 120, "Install": 120, "Startup": 120, "Shutdown": 15, "Recover": 60}
IPC_SERVICES = ("aws.greengrass.ipc.mqttproxy", "aws.greengrass.ipc.pubsub")
RUNTIME_ZIP = "edgecv-runtime.zip"
MODEL_PREFIX = "com.edgecv.model."

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
# {artifacts:path}, {iot:thingName}, {configuration:/a/b}, {com.x.Y:artifacts:decompressedPath}, ... (any
# {word:...} token: what is not a variable is reported), but not a shell ${VAR:-default}
_VARIABLE = re.compile(r"(?<!\$)\{([A-Za-z0-9._-]+(?::[A-Za-z0-9._/~-]*)+)\}")


class RecipeError(EdgecvError):
    """A recipe (or a build folder of recipes and artifacts) the nucleus would refuse or run wrongly."""


# --- writing ---------------------------------------------------------------------------------------------

def artifact_uri(bucket: str, component: str, version: str, file: str) -> str:
    return f"s3://{bucket}/{component}/{version}/{file}"


def model_recipe(component: str, version: str, model: str, builds: dict[str, str], bucket: str,
                 publisher: str = "edgecv") -> dict:
    """``builds``: CPU architecture -> ZIP file name (one compiled artifact each)."""
    manifests = []
    for arch, file in builds.items():
        manifests.append({
            "Name": f"linux-{PLATFORMS[arch]['architecture']}",
            "Platform": dict(PLATFORMS[arch]),
            "Artifacts": [{"URI": artifact_uri(bucket, component, version, file), "Unarchive": "ZIP",
                           "Permission": {"Read": "ALL"}}],   # read by the counter, another component
        })
    return {
        "RecipeFormatVersion": RECIPE_FORMAT,
        "ComponentName": component,
        "ComponentVersion": version,
        "ComponentDescription": f"{model} compiled with Apache TVM (edgecv compile), one build per CPU: "
                                "the folder {artifacts:decompressedPath}/<build>/ holds model.so, params.npz and "
                                "manifest.json (checked by the edge runtime before loading).",
        "ComponentPublisher": publisher,
        "ComponentConfiguration": {"DefaultConfiguration": {"model": model}},
        "Manifests": manifests,
    }


def counter_recipe(component: str, version: str, model_component: str, model_version: str, wheel: str,
                   default_configuration: dict, bucket: str, archs=COUNTER_ARCHS, publisher: str = "edgecv") -> dict:
    """The counter: Install makes a versioned venv under the work folder with the edge runtime only
    (``edgecv[edge,greengrass]`` from the shipped wheels, the TVM runtime among them, pinned by the box lock; no
    MXNet, no compiler), Run serves."""
    runtime = "{artifacts:decompressedPath}/" + Path(RUNTIME_ZIP).stem
    venv = "{work:path}/venv-" + version
    install = "\n".join([
        "set -eu",
        f'VENV="{venv}"',
        'rm -rf "$VENV"',                       # an interrupted install left no marker: start over
        'python3 -m venv "$VENV"',
        f'"$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -c "{runtime}/constraints.txt" '
        f'--find-links "{runtime}" "{runtime}/{wheel}[edge,greengrass]"',
        '"$VENV/bin/edgecv" --version',
        'touch "$VENV/.installed"',
        'for old in "{work:path}"/venv-*; do [ "$old" = "$VENV" ] || rm -rf "$old"; done',
    ])
    run = (f'exec "{venv}/bin/edgecv" component serve --component {component} '
           f'--model-dir "{{{model_component}:artifacts:decompressedPath}}" --work "{{work:path}}"')
    recover = "\n".join([
        # ERRORED: if the runtime itself is broken, drop the install marker so the next Install rebuilds it
        f'"{venv}/bin/python" -c "import edgecv.greengrass.service" 2>/dev/null '
        f'|| rm -f "{venv}/.installed"',
        'echo "edgecv: recovering from ERRORED; the counts not yet delivered wait in {work:path}/outbox"',
    ])
    lifecycle = {
        "Setenv": {"PYTHONUNBUFFERED": "1"},
        "Install": {"Script": install, "Timeout": 1200, "Skipif": f"exists {venv}/.installed"},
        "Run": {"Script": run},
        "Recover": {"Script": recover, "Timeout": 60},
    }
    manifests = [{
        "Name": f"linux-{PLATFORMS[arch]['architecture']}",
        "Platform": dict(PLATFORMS[arch]),
        "Artifacts": [{"URI": artifact_uri(bucket, component, version, RUNTIME_ZIP), "Unarchive": "ZIP"}],
    } for arch in archs]
    return {
        "RecipeFormatVersion": RECIPE_FORMAT,
        "ComponentName": component,
        "ComponentVersion": version,
        "ComponentDescription": "Counts people and goods in a video source with a TVM-compiled detector and "
                                "publishes counts, events and stats to AWS IoT Core (or local pub/sub, or MQTT).",
        "ComponentPublisher": publisher,
        "ComponentDependencies": {model_component: {"VersionRequirement": f"^{model_version}",
                                                    "DependencyType": "HARD"}},
        "ComponentConfiguration": {"DefaultConfiguration": default_configuration},
        "Manifests": manifests,
        "Lifecycle": lifecycle,
    }


def dump_recipe(recipe: dict) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):           # write every value out: no &id001 anchors
            return True

    def text(dumper, value):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return "---\n" + yaml.dump(recipe, Dumper=Dumper, sort_keys=False, width=120, allow_unicode=True)


def load_recipe(path: Path) -> dict:
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
        recipe = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: not a readable recipe ({str(exc).splitlines()[0]})", "fix its syntax") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys", "see the recipe reference")
    version = recipe.get("RecipeFormatVersion")
    if isinstance(version, datetime.date):       # an unquoted 2020-01-25 in YAML; Greengrass reads it as text
        recipe["RecipeFormatVersion"] = version.isoformat()
    return recipe


# --- the nucleus' rules ----------------------------------------------------------------------------------

def _platform_value_matches(expected, actual: str | None) -> bool:
    if expected == "*":
        return True
    if isinstance(expected, str) and len(expected) > 1 and expected.startswith("/") and expected.endswith("/"):
        return actual is not None and re.fullmatch(expected[1:-1], actual) is not None
    return actual is not None and str(expected) == actual


def select_manifest(recipe: dict, platform: dict) -> dict | None:
    """The first manifest whose ``Platform`` the device matches (a manifest without one matches all)."""
    for manifest in recipe.get("Manifests") or []:
        wanted = manifest.get("Platform") or {}
        if all(_platform_value_matches(v, platform.get(k)) for k, v in wanted.items()):
            return manifest
    return None


def _step(value) -> dict | None:
    if value is None:
        return None
    return {"Script": value} if isinstance(value, str) else dict(value)


def lifecycle(recipe: dict, manifest: dict) -> dict:
    """Lifecycle steps for a manifest: its own ``Lifecycle``, else the global one (selection keys honoured)."""
    if manifest.get("Lifecycle"):
        source = manifest["Lifecycle"]
    else:
        source = _select(recipe.get("Lifecycle") or {}, set(manifest.get("Selections") or ["all"]))
    steps = {}
    for name, value in source.items():
        steps[name] = value if name == "Setenv" else _step(value)
    return steps


def _select(node, selections: set):
    """Resolve selection keys (keys starting with a lower-case letter) in a global lifecycle node."""
    if not isinstance(node, dict):
        return node
    chosen = {k: (v if k == "Setenv" else _select(v, selections)) for k, v in node.items() if not k[:1].islower()}
    for key, value in node.items():
        if key[:1].islower() and key in selections:
            picked = _select(value, selections)
            if not isinstance(picked, dict):
                return picked
            chosen.update(picked)
    return chosen


def json_pointer(document, pointer: str):
    """RFC 6901 lookup; ``KeyError`` when there is no such node."""
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        raise KeyError(pointer)
    node = document
    for raw in pointer[1:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise KeyError(pointer)
    return node


@dataclass
class VariableContext:
    """What recipe variables resolve to for one component on one device."""
    component: str
    artifacts: dict[str, Path]                # component -> {artifacts:path}
    decompressed: dict[str, Path]             # component -> {artifacts:decompressedPath}
    work: dict[str, Path]                     # component -> {work:path}
    configuration: dict[str, dict]            # component -> its configuration
    dependencies: set[str] = field(default_factory=set)
    thing_name: str = "edgecv-local"
    root: Path = Path("/greengrass/v2")

    def resolve(self, name: str) -> str:
        """The value of variable ``name`` (without braces); ``KeyError`` with the reason if it doesn't resolve."""
        if name == "iot:thingName":
            return self.thing_name
        if name == "kernel:rootPath":
            return str(self.root)
        owner, rest = self.component, name
        first, _, tail = name.partition(":")
        if first not in ("artifacts", "work", "configuration"):
            owner, rest = first, tail
            if owner != self.component and owner not in self.dependencies:
                raise KeyError(f"{{{name}}} names {owner}, which is not a direct dependency")
        table = {"artifacts:path": self.artifacts, "artifacts:decompressedPath": self.decompressed,
                 "work:path": self.work}
        if rest in table:
            if owner not in table[rest]:
                raise KeyError(f"{{{name}}}: {owner} is not installed here")
            return str(table[rest][owner])
        if rest.startswith("configuration:"):
            try:
                value = json_pointer(self.configuration.get(owner, {}), rest[len("configuration:"):])
            except KeyError:
                raise KeyError(f"{{{name}}}: no such key in the configuration of {owner}") from None
            if isinstance(value, (dict, list)):
                return json.dumps(value, separators=(",", ":"))
            if value is None:
                return "null"
            if isinstance(value, bool):
                return "true" if value else "false"
            return str(value)
        raise KeyError(f"{{{name}}} is not a recipe variable")


def variables(text: str) -> list[str]:
    return _VARIABLE.findall(text)


def substitute(text: str, context: VariableContext) -> str:
    """Replace every recipe variable; ``RecipeError`` naming the first that does not resolve."""
    def one(match):
        try:
            return context.resolve(match.group(1))
        except KeyError as exc:
            raise RecipeError(f"{context.component}: {exc.args[0]}", "fix the recipe") from None
    return _VARIABLE.sub(one, text)


# --- checking ----------------------------------------------------------------------------------------------

def _version_tuple(v: str) -> tuple[int, int, int]:
    m = SEMVER.match(v.strip())
    if not m:
        raise ValueError(v)
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def version_matches(version: str, requirement: str) -> bool:
    """npm-style ranges as Greengrass reads them: ``1.2.3``, ``=1.2.3``, ``^1.2.3``, ``~1.2.3``, comparators
    (``>=1.0.0 <2.0.0``), ``*``, alternatives with ``||``."""
    v = _version_tuple(version)
    for alternative in requirement.split("||"):
        ok = True
        for term in alternative.split() or ["*"]:
            if term in ("*", "x"):
                continue
            m = re.fullmatch(r"(\^|~|>=|<=|>|<|=)?(.+)", term)
            op, base = m.group(1) or "=", _version_tuple(m.group(2))
            if op == "^":
                upper = (base[0] + 1, 0, 0) if base[0] else (0, base[1] + 1, 0) if base[1] else (0, 0, base[2] + 1)
                ok &= base <= v < upper
            elif op == "~":
                ok &= base <= v < (base[0], base[1] + 1, 0)
            else:
                ok &= {"=": v == base, ">=": v >= base, "<=": v <= base, ">": v > base, "<": v < base}[op]
        if ok:
            return True
    return False


def _scripts(steps: dict) -> list[tuple[str, str]]:
    out = []
    for name, step in steps.items():
        if name == "Setenv":
            out += [(f"Lifecycle.Setenv.{k}", str(v)) for k, v in (step or {}).items()]
            continue
        for key in ("Script", "Skipif"):
            if step and isinstance(step.get(key), str):
                out.append((f"Lifecycle.{name}.{key}", step[key]))
        out += [(f"Lifecycle.{name}.Setenv.{k}", str(v)) for k, v in ((step or {}).get("Setenv") or {}).items()]
    return out


def _archive_stems(manifest: dict) -> set[str]:
    return {PurePosixPath(str(a.get("URI", ""))).stem for a in manifest.get("Artifacts") or []
            if str(a.get("Unarchive", "NONE")).upper() == "ZIP"}


def check_recipe(recipe: dict, others: dict[str, dict] | None = None, artifacts_dir: Path | None = None,
                 origin: str | None = None) -> list[str]:
    """Problems with one recipe (each one line), given the other recipes of the build (by component name)
    and, to check that artifact files exist, the build's ``artifacts/`` folder."""
    others = others or {}
    name = recipe.get("ComponentName")
    where = origin or str(name or "recipe")
    errors: list[str] = []

    def err(text: str) -> None:
        errors.append(f"{where}: {text}")

    if recipe.get("RecipeFormatVersion") != RECIPE_FORMAT:
        err(f"RecipeFormatVersion must be '{RECIPE_FORMAT}', not {recipe.get('RecipeFormatVersion')!r}")
    if not isinstance(name, str) or not _NAME.match(name):
        err(f"ComponentName {name!r} is missing or not a valid name (letters, digits, . _ -)")
    version = recipe.get("ComponentVersion")
    if not isinstance(version, str) or not SEMVER.match(version):
        err(f"ComponentVersion {version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    if not isinstance(recipe.get("ComponentPublisher"), str) or not recipe.get("ComponentPublisher"):
        err("ComponentPublisher is missing")
    known = {"RecipeFormatVersion", "ComponentName", "ComponentVersion", "ComponentDescription", "ComponentPublisher",
             "ComponentConfiguration", "ComponentDependencies", "ComponentType", "ComponentSource", "Manifests",
             "Lifecycle"}
    for key in recipe:
        if key not in known:
            err(f"unknown key {key!r} (keys are case-sensitive)")

    configuration = (recipe.get("ComponentConfiguration") or {}).get("DefaultConfiguration") or {}
    if not isinstance(configuration, dict):
        err("ComponentConfiguration.DefaultConfiguration must be a mapping")
        configuration = {}
    errors += [f"{where}: {e}" for e in _check_access_control(configuration.get("accessControl"))]

    dependencies = recipe.get("ComponentDependencies") or {}
    if not isinstance(dependencies, dict):
        err("ComponentDependencies must be a mapping of component name -> {VersionRequirement, DependencyType}")
        dependencies = {}
    for dep, spec in dependencies.items():
        requirement = (spec or {}).get("VersionRequirement") if isinstance(spec, dict) else None
        if not isinstance(requirement, str):
            err(f"ComponentDependencies.{dep}.VersionRequirement is missing")
            continue
        if (spec or {}).get("DependencyType", "HARD") not in ("HARD", "SOFT"):
            err(f"ComponentDependencies.{dep}.DependencyType must be HARD or SOFT")
        other = others.get(dep)
        if other is None:
            if others:
                err(f"depends on {dep}, which is not in this build (recipes/{dep}-<version>.yaml)")
            continue
        try:
            if not version_matches(str(other.get("ComponentVersion")), requirement):
                err(f"needs {dep} {requirement}, but the build has {other.get('ComponentVersion')}")
        except (ValueError, AttributeError):
            err(f"ComponentDependencies.{dep}.VersionRequirement {requirement!r} is not a version range")

    manifests = recipe.get("Manifests")
    if not isinstance(manifests, list) or not manifests:
        err("Manifests must list at least one platform")
        return errors
    for i, manifest in enumerate(manifests):
        label = f"Manifests[{i}]"
        if not isinstance(manifest, dict):
            err(f"{label} must be a mapping")
            continue
        platform = manifest.get("Platform") or {}
        if not isinstance(platform, dict) or not all(isinstance(v, str) for v in platform.values()):
            err(f"{label}.Platform must map attributes (os, architecture) to strings")
            platform = {}
        files = []
        for j, artifact in enumerate(manifest.get("Artifacts") or []):
            uri = artifact.get("URI") if isinstance(artifact, dict) else None
            if not isinstance(uri, str) or not re.match(r"^(s3://[^/]+/.+|greengrass:.+|docker:.+)$", uri):
                err(f"{label}.Artifacts[{j}].URI {uri!r} is not an s3:// URI")
                continue
            if str(artifact.get("Unarchive", "NONE")).upper() not in ("NONE", "ZIP"):
                err(f"{label}.Artifacts[{j}].Unarchive must be NONE or ZIP (the nucleus unpacks nothing else)")
            file = PurePosixPath(uri).name
            files.append(file)
            if artifacts_dir is not None and uri.startswith("s3://") and name and version:
                if not (Path(artifacts_dir) / name / version / file).is_file():
                    err(f"{label}: artifact {file} not found in artifacts/{name}/{version}/")
        duplicates = sorted({f for f in files if files.count(f) > 1})
        if duplicates:
            err(f"{label}: artifact file names must be unique in a manifest: {', '.join(duplicates)}")
        steps = lifecycle(recipe, manifest)
        for step in steps:
            if step not in LIFECYCLE_STEPS:
                err(f"{label}: unknown lifecycle step {step!r}")
        if "Run" in steps and "Startup" in steps:
            err(f"{label}: a lifecycle has Run or Startup, not both")
        for step_name, step in steps.items():
            if step_name == "Setenv" or step is None:
                continue
            timeout = step.get("Timeout")
            if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
                err(f"{label}: Lifecycle.{step_name}.Timeout must be a positive number of seconds")
            skip = step.get("Skipif")
            if skip is not None and not re.match(r"^(onpath|exists)\s+\S", str(skip)):
                err(f"{label}: Lifecycle.{step_name}.Skipif must be 'onpath CMD' or 'exists FILE'")
        errors += [f"{where}: {label}: {e}" for e in
                   _check_variables(recipe, manifest, steps, platform, configuration, dependencies, others)]
    return errors


def _check_variables(recipe, manifest, steps, platform, configuration, dependencies, others) -> list[str]:
    errors = []
    name = recipe.get("ComponentName")
    for where, text in _scripts(steps):
        for var in variables(text):
            first, _, tail = var.partition(":")
            owner, rest = (name, var) if first in ("artifacts", "work", "configuration", "kernel", "iot") \
                else (first, tail)
            if var in ("iot:thingName", "kernel:rootPath"):
                continue
            if owner != name and owner not in dependencies:
                errors.append(f"{where}: {{{var}}} names {owner}, which is not a direct dependency")
                continue
            if rest.startswith("configuration:"):
                owner_config = configuration if owner == name else \
                    ((others.get(owner) or {}).get("ComponentConfiguration") or {}).get("DefaultConfiguration") or {}
                if owner == name or owner in others:
                    try:
                        json_pointer(owner_config, rest[len("configuration:"):])
                    except KeyError:
                        errors.append(f"{where}: {{{var}}}: no such key in the default configuration of {owner}")
                continue
            if rest not in ("artifacts:path", "artifacts:decompressedPath", "work:path"):
                errors.append(f"{where}: {{{var}}} is not a recipe variable")
                continue
            if rest == "artifacts:decompressedPath":
                target = manifest if owner == name else (
                    select_manifest(others[owner], platform) if owner in others else None)
                if owner in others and target is None:
                    continue            # reported as an uncovered platform
                stems = _archive_stems(target or {}) if target is not None else None
                if stems is not None and not stems:
                    errors.append(f"{where}: {{{var}}} but {owner} has no ZIP artifact for this platform")
                used = re.findall(re.escape("{" + var + "}") + r"/([^/\"'\s]+)", text)
                for folder in used:
                    if stems is not None and folder not in stems:
                        errors.append(f"{where}: {{{var}}}/{folder}: no ZIP artifact {folder}.zip unpacks there")
    for dep in dependencies:
        if dep in others and select_manifest(others[dep], platform) is None:
            errors.append(f"platform {json.dumps(platform, sort_keys=True)} is not covered by {dep}, a dependency "
                          "(the deployment would fail there)")
    return errors


def _check_access_control(policies) -> list[str]:
    if policies is None:
        return []
    if not isinstance(policies, dict):
        return ["accessControl must map IPC services to policies"]
    errors = []
    for service, by_id in policies.items():
        if not isinstance(by_id, dict):
            errors.append(f"accessControl.{service} must map policy ids to policies")
            continue
        for policy_id, policy in by_id.items():
            if not isinstance(policy, dict) or not isinstance(policy.get("operations"), list) \
                    or not isinstance(policy.get("resources"), list):
                errors.append(f"accessControl.{service}.{policy_id} needs lists of operations and resources")
    return errors


def read_build(build: Path) -> dict[str, dict]:
    """The recipes of a build folder (``recipes/*.yaml|json``), by component name (newest version wins)."""
    folder = Path(build) / "recipes"
    if not folder.is_dir():
        raise RecipeError(f"no recipes/ folder in {build}", "pass the --out folder of `edgecv component build`")
    recipes: dict[str, dict] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".yaml", ".yml", ".json"):
            continue
        recipe = load_recipe(path)
        recipe["__path__"] = path.name
        name = recipe.get("ComponentName")
        current = recipes.get(name)
        try:
            newer = current is None or _version_tuple(recipe.get("ComponentVersion", "")) > \
                _version_tuple(current.get("ComponentVersion", ""))
        except ValueError:
            newer = current is None
        if newer:
            recipes[name] = recipe
    if not recipes:
        raise RecipeError(f"no recipes in {folder}", "pass the --out folder of `edgecv component build`")
    return recipes


def check_build(build: Path) -> dict[str, dict]:
    """Read and check a build folder; ``RecipeError`` listing every problem. Returns the recipes."""
    recipes = read_build(build)
    errors = []
    for name, recipe in recipes.items():
        clean = {k: v for k, v in recipe.items() if k != "__path__"}
        errors += check_recipe(clean, recipes, Path(build) / "artifacts", origin=f"recipes/{recipe['__path__']}")
    if errors:
        raise RecipeError(f"{len(errors)} problem{'s' if len(errors) > 1 else ''} in {build}: " + "; ".join(errors),
                          "rebuild with `edgecv component build`, or fix the recipes")
    return recipes
