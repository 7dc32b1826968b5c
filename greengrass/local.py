"""``edgecv component run-local``: run a built component as the Greengrass nucleus would, on this machine,
without Greengrass.

What the nucleus does, in order: check the recipes; pick each component's manifest for this platform;
put its artifacts under ``packages/artifacts/<component>/<version>/`` and unpack ZIPs into
``packages/artifacts-unarchived/<component>/<version>/<zip name>/``; give it a work folder
``work/<component>/``; merge the deployment's configuration into the recipe's ``DefaultConfiguration``;
replace recipe variables; run ``Install`` (unless its ``Skipif`` holds) and then ``Run`` with ``sh -c`` in the
work folder, with their timeouts, each with ``SVCUID``, ``AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT``
and ``AWS_IOT_THING_NAME`` set, the IPC socket served by the development nucleus (``devserver``), which
enforces the component's ``accessControl``; SIGTERM on stop, SIGKILL after the shutdown timeout; on an error,
``Recover`` and a restart, and ``BROKEN`` after three errors.

Dependencies (the model component) are laid out first; they have no lifecycle here.

``--deps-from PYTHON`` makes Install cheap and offline for trials and tests: the recipe's own Install script
runs unchanged (a real venv, a real ``pip install`` of the shipped wheel), with pip told through its
environment (``PIP_NO_INDEX``, ``PIP_NO_DEPS``) to install only the wheel, and the dependencies taken from
PYTHON's environment (``PYTHONPATH``, and ``python3`` on ``PATH`` is PYTHON's base interpreter, so they match).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from edgecv.edge.errors import EdgecvError
from edgecv.greengrass.recipes import (DEFAULT_TIMEOUTS, PLATFORMS, RecipeError, VariableContext, check_build,
                                       lifecycle, select_manifest, substitute, version_matches)
from edgecv.greengrass import COMPONENT
from edgecv.greengrass.devserver import merge_configuration as _merge

log = logging.getLogger("edgecv.greengrass.local")


def host_platform() -> dict:
    from edgecv.edge.elf import host_arch

    arch = host_arch()
    if arch not in PLATFORMS:
        raise EdgecvError(f"no Greengrass platform for this CPU ({arch})", "run on x86_64, aarch64 or armv7")
    return dict(PLATFORMS[arch])


def _interpolate(value, context: VariableContext):
    """Recipe variables in configuration strings (the nucleus with interpolateComponentConfiguration)."""
    if isinstance(value, dict):
        return {k: _interpolate(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, context) for v in value]
    if isinstance(value, str) and "{iot:thingName}" in value:
        return value.replace("{iot:thingName}", context.thing_name)
    return value


@dataclass
class Installed:
    name: str
    version: str
    recipe: dict
    manifest: dict
    steps: dict
    artifacts: Path
    decompressed: Path
    work: Path
    configuration: dict


@dataclass
class RunResult:
    component: str
    state: str                                  # FINISHED, ERRORED (stopped after an error), BROKEN, STOPPED
    exit_codes: list[int] = field(default_factory=list)
    reported_states: list[str] = field(default_factory=list)
    published: list[dict] = field(default_factory=list)
    root: Path | None = None

    def summary(self) -> dict:
        topics: dict[str, int] = {}
        for m in self.published:
            topics[m["topic"]] = topics.get(m["topic"], 0) + 1
        counts = [m for m in self.published if m["topic"].endswith("/counts")]
        last = counts[-1]["message"] if counts else None
        return {"component": self.component, "state": self.state, "exit_codes": self.exit_codes,
                "reported_states": self.reported_states, "messages": topics, "last_counts": last,
                "root": str(self.root) if self.root else None}


class LocalNucleus:
    def __init__(self, build: Path, root: Path, thing_name: str = "edgecv-local", merge: dict | None = None,
                 env: dict | None = None, step_env: dict | None = None, platform: dict | None = None,
                 shutdown_timeout: float = 15.0, output=None):
        self.build, self.root = Path(build), Path(root)
        self.thing_name = thing_name
        self.merge = merge or {}
        self.env = dict(env or {})                      # for every step, as the nucleus' own environment
        self.step_env = dict(step_env or {})            # step name -> more variables (--deps-from)
        self.platform = platform or host_platform()
        self.shutdown_timeout = shutdown_timeout
        self.output = output or sys.stderr
        self.recipes = check_build(self.build)
        self.installed: dict[str, Installed] = {}
        self._sock_dir = Path(tempfile.mkdtemp(prefix="edgecv-gg-", dir="/tmp"))   # AF_UNIX: a short path
        self._process: subprocess.Popen | None = None
        self._stop = threading.Event()

    # --- resolving and laying out ---
    def _order(self, name: str, seen: list[str] | None = None) -> list[str]:
        """``name`` and its dependencies, dependencies first; versions checked against the build."""
        seen = [] if seen is None else seen
        recipe = self.recipes.get(name)
        if recipe is None:
            raise RecipeError(f"{name} is not in {self.build}/recipes", "build it with `edgecv component build`")
        for dep, spec in (recipe.get("ComponentDependencies") or {}).items():
            other = self.recipes.get(dep)
            if other is None or not version_matches(other["ComponentVersion"], spec.get("VersionRequirement", "*")):
                raise RecipeError(f"{name} needs {dep} {spec.get('VersionRequirement')}, not in the build",
                                  "build both components together")
            if dep not in seen:
                self._order(dep, seen)
        if name not in seen:
            seen.append(name)
        return seen

    def _context(self, name: str) -> VariableContext:
        recipe = self.recipes[name]
        return VariableContext(
            component=name,
            artifacts={n: i.artifacts for n, i in self.installed.items()},
            decompressed={n: i.decompressed for n, i in self.installed.items()},
            work={n: i.work for n, i in self.installed.items()},
            configuration={n: i.configuration for n, i in self.installed.items()},
            dependencies=set(recipe.get("ComponentDependencies") or {}),
            thing_name=self.thing_name, root=self.root)

    def _lay_out(self, name: str) -> Installed:
        recipe = self.recipes[name]
        version = recipe["ComponentVersion"]
        manifest = select_manifest(recipe, self.platform)
        if manifest is None:
            raise RecipeError(f"{name} {version} has no manifest for this platform "
                              f"({json.dumps(self.platform, sort_keys=True)})", "build it for this CPU")
        artifacts = self.root / "packages" / "artifacts" / name / version
        decompressed = self.root / "packages" / "artifacts-unarchived" / name / version
        work = self.root / "work" / name
        for folder in (artifacts, decompressed, work):
            folder.mkdir(parents=True, exist_ok=True)
        for artifact in manifest.get("Artifacts") or []:
            file = PurePosixPath(artifact["URI"]).name
            source = self.build / "artifacts" / name / version / file
            shutil.copy2(source, artifacts / file)
            if str(artifact.get("Unarchive", "NONE")).upper() == "ZIP":
                target = decompressed / Path(file).stem
                shutil.rmtree(target, ignore_errors=True)
                with zipfile.ZipFile(source) as z:
                    for member in z.namelist():
                        if member.startswith("/") or ".." in PurePosixPath(member).parts:
                            raise RecipeError(f"{file}: unsafe path {member!r} in the ZIP", "rebuild the artifact")
                    z.extractall(target)
        configuration = copy.deepcopy((recipe.get("ComponentConfiguration") or {}).get("DefaultConfiguration") or {})
        configuration = _merge(configuration, self.merge.get(name, {}))
        installed = Installed(name, version, recipe, manifest, lifecycle(recipe, manifest), artifacts, decompressed,
                              work, configuration)
        self.installed[name] = installed
        installed.configuration = _interpolate(configuration, self._context(name))
        return installed

    # --- running steps ---
    def _environment(self, installed: Installed, step_name: str, step: dict | None, ipc) -> dict:
        env = {**os.environ, **self.env, **self.step_env.get(step_name, {}),
               "AWS_IOT_THING_NAME": self.thing_name, "AWS_REGION": "local",
               "AWS_DEFAULT_REGION": "local", "GG_ROOT_CA_PATH": ""}
        if ipc is not None:
            env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] = str(ipc.socket_path)
            env["SVCUID"] = ipc.token
        context = self._context(installed.name)
        for scope in (installed.steps.get("Setenv") or {}, (step or {}).get("Setenv") or {}):
            env.update({str(k): substitute(str(v), context) for k, v in scope.items()})
        return env

    def _skip(self, installed: Installed, step: dict) -> bool:
        skip = step.get("Skipif")
        if not skip:
            return False
        kind, _, what = substitute(str(skip), self._context(installed.name)).partition(" ")
        what = what.strip()
        return shutil.which(what) is not None if kind == "onpath" else Path(what).exists()

    def _say(self, text: str) -> None:
        print(f"[run-local] {text}", file=self.output, flush=True)

    def _pipe(self, stream, name: str, log_file) -> None:
        for line in iter(stream.readline, ""):
            log_file.write(line)
            log_file.flush()
            self.output.write(f"[{name}] {line}")
            self.output.flush()

    def _run_step(self, installed: Installed, step_name: str, ipc, wait: bool = True, timeout: float | None = None):
        step = installed.steps.get(step_name)
        if not step or not step.get("Script"):
            return None
        if self._skip(installed, step):
            self._say(f"{installed.name}: {step_name} skipped ({step['Skipif']})")
            return 0
        script = substitute(step["Script"], self._context(installed.name))
        timeout = step.get("Timeout", DEFAULT_TIMEOUTS.get(step_name)) if timeout is None else timeout
        if step.get("RequiresPrivilege") and os.geteuid() != 0:
            self._say(f"{installed.name}: {step_name} asks for root; running as this user")
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        log_file = open(logs / f"{installed.name}.log", "a")
        self._say(f"{installed.name}: {step_name}")
        process = subprocess.Popen(["sh", "-c", script], cwd=installed.work, env=self._environment(installed, step_name, step, ipc),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        reader = threading.Thread(target=self._pipe, args=(process.stdout, installed.name, log_file), daemon=True)
        reader.start()
        if not wait:
            return process, reader, log_file
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._terminate(process)
            raise EdgecvError(f"{installed.name}: {step_name} timed out after {timeout} s",
                              f"see {logs / (installed.name + '.log')}")
        finally:
            reader.join(5)
            log_file.close()
        return code

    def _terminate(self, process: subprocess.Popen) -> int:
        """As the nucleus stops a component: SIGTERM to its process group, SIGKILL after the timeout."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                return process.wait(self.shutdown_timeout)
            except subprocess.TimeoutExpired:
                self._say(f"no exit {self.shutdown_timeout} s after SIGTERM: SIGKILL")
                os.killpg(process.pid, signal.SIGKILL)
        return process.wait()

    # --- the whole thing ---
    def stop(self) -> None:
        self._stop.set()

    def run(self, component: str = COMPONENT, duration: float | None = None, max_errors: int = 3) -> RunResult:
        from edgecv.greengrass.devserver import IpcServer

        order = self._order(component)
        for name in order:
            self._lay_out(name)
        main = self.installed[component]
        for name in order:
            if name != component and any(k in self.installed[name].steps for k in ("Install", "Run", "Startup")):
                self._say(f"{name}: has lifecycle steps run-local does not run for dependencies")
        ipc = IpcServer(self._sock_dir / "ipc.sock", secrets.token_hex(16), component, main.configuration,
                        thing_name=self.thing_name).start()
        result = RunResult(component, "STOPPED", root=self.root)
        try:
            code = self._run_step(main, "Install", ipc)
            if code not in (None, 0):
                raise EdgecvError(f"{component}: Install failed (exit {code})",
                                  f"see {self.root / 'logs' / (component + '.log')}")
            step = "Run" if "Run" in main.steps else "Startup"
            deadline = None if duration is None else time.monotonic() + duration
            errors = 0
            while True:
                started = self._run_step(main, step, ipc, wait=False)
                if started is None:
                    result.state = "FINISHED"
                    break
                process, reader, log_file = started
                self._process = process
                while process.poll() is None and not self._stop.is_set() and \
                        (deadline is None or time.monotonic() < deadline):
                    time.sleep(0.2)
                stopped_by_us = process.poll() is None
                code = self._terminate(process) if stopped_by_us else process.returncode
                reader.join(5)
                log_file.close()
                result.exit_codes.append(code)
                if stopped_by_us:
                    result.state = "STOPPED"
                    break
                if code == 0:
                    result.state = "FINISHED"
                    break
                errors += 1
                self._say(f"{component}: {step} exited with {code}: ERRORED")
                if errors >= max_errors:
                    result.state = "BROKEN"
                    break
                self._run_step(main, "Recover", ipc)
                if self._stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    result.state = "ERRORED"
                    break
                self._say(f"{component}: restarting ({errors} error{'s' if errors > 1 else ''} so far)")
        finally:
            result.reported_states = list(ipc.states)
            result.published = [_decoded(m) for m in ipc.published_iot_core] + \
                [_decoded(m, local=True) for m in ipc.published_local]
            if ipc.protocol_errors:
                self._say(f"IPC protocol errors: {ipc.protocol_errors}")
            ipc.stop()
            shutil.rmtree(self._sock_dir, ignore_errors=True)
        self._say(f"{component}: {result.state}")
        return result


def _decoded(m: dict, local: bool = False) -> dict:
    payload = m["payload"]
    if isinstance(payload, (bytes, bytearray)):
        try:
            message = json.loads(payload)
        except ValueError:
            message = payload.decode(errors="replace")
    else:
        message = payload
    out = {"topic": m["topic"], "message": message, "target": "local" if local else "iotcore"}
    if not local:
        out["qos"] = m["qos"]
    return out


def deps_from(python: str) -> dict:
    """Step environments for ``--deps-from PYTHON``: Install's pip installs only the shipped wheel (no index, no
    dependencies) with PYTHON's base interpreter as ``python3`` (same version, so the dependencies fit); Run and
    Recover find the dependencies in PYTHON's site-packages (``PYTHONPATH``; the venv's own edgecv comes first
    there only because .pth files, such as an editable install's, are not read from ``PYTHONPATH``)."""
    probe = subprocess.run([python, "-c", "import json, sys, sysconfig; print(json.dumps({'purelib': "
                            "sysconfig.get_paths()['purelib'], 'platlib': sysconfig.get_paths()['platlib'], "
                            "'base': getattr(sys, '_base_executable', sys.executable)}))"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        raise EdgecvError(f"--deps-from {python}: not a Python interpreter", "pass the path of a python3")
    info = json.loads(probe.stdout)
    shims = Path(tempfile.mkdtemp(prefix="edgecv-python-"))
    (shims / "python3").symlink_to(Path(info["base"]).resolve())
    paths = os.pathsep.join(dict.fromkeys([info["purelib"], info["platlib"]]))
    install = {"PIP_NO_INDEX": "1", "PIP_NO_DEPS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
               "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}"}
    return {"Install": install, "Run": {"PYTHONPATH": paths}, "Recover": {"PYTHONPATH": paths}}
