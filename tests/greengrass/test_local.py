"""run-local behaves as the nucleus: artifacts laid out and unpacked, configuration merged and interpolated,
recipe variables (own and a dependency's) replaced, Install skipped by its Skipif, the IPC socket and token
in the environment (the real awsiotsdk client connects with them), accessControl enforced, SIGTERM then SIGKILL
on stop, Recover and restarts up to BROKEN, timeouts."""
from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import pytest

from edgecv.edge.errors import EdgecvError
from edgecv.greengrass.local import LocalNucleus
from edgecv.greengrass.recipes import RecipeError, dump_recipe

TOOL = "com.example.Tool"
DATA = "com.example.Data"

TOOL_PY = r'''
import json, os, sys
from pathlib import Path
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model

msg, data_file, port, topic = sys.argv[1:5]
client = GreengrassCoreIPCClientV2()          # socket and token from the environment, as in Greengrass
client.update_state(state="RUNNING")
client.publish_to_iot_core(topic_name=topic, qos="1", payload=json.dumps({"msg": msg}).encode())
try:
    client.publish_to_iot_core(topic_name="not/mine", qos="1", payload=b"x")
    refused = False
except model.UnauthorizedError:
    refused = True
config = client.get_configuration().value
Path("out.json").write_text(json.dumps({
    "msg": msg, "data": Path(data_file).read_text(), "port": port, "cwd": os.getcwd(), "refused": refused,
    "thing": os.environ["AWS_IOT_THING_NAME"], "svcuid": bool(os.environ.get("SVCUID")),
    "greeting": os.environ.get("GREETING"), "config_topic": config["topic"]}))
client.close()
'''


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buffer.getvalue()


def _recipe(name, lifecycle, artifacts=(), configuration=None, dependencies=None):
    recipe = {"RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": "1.0.0",
              "ComponentPublisher": "tests",
              "Manifests": [{"Platform": {"os": "linux"},
                             "Artifacts": [{"URI": f"s3://bucket/{name}/1.0.0/{a}", "Unarchive": "ZIP"}
                                           for a in artifacts]}]}
    if lifecycle:
        recipe["Lifecycle"] = lifecycle
    if configuration is not None:
        recipe["ComponentConfiguration"] = {"DefaultConfiguration": configuration}
    if dependencies:
        recipe["ComponentDependencies"] = {d: {"VersionRequirement": "^1.0.0"} for d in dependencies}
    return recipe


def _build(tmp_path: Path, tool_lifecycle: dict, **extra) -> Path:
    build = tmp_path / "build"
    (build / "recipes").mkdir(parents=True)
    for name, files in ((DATA, {"data.zip": {"hello.txt": "hello"}}), (TOOL, {"tool.zip": {"tool.py": TOOL_PY}})):
        folder = build / "artifacts" / name / "1.0.0"
        folder.mkdir(parents=True)
        for zip_name, content in files.items():
            (folder / zip_name).write_bytes(_zip(content))
    (build / "recipes" / f"{DATA}-1.0.0.yaml").write_text(dump_recipe(
        _recipe(DATA, None, ["data.zip"], {"port": 8})))
    policy = {"aws.greengrass.ipc.mqttproxy": {"tool:1": {"operations": ["aws.greengrass#PublishToIoTCore"],
                                                          "resources": ["t/{iot:thingName}"]}}}
    (build / "recipes" / f"{TOOL}-1.0.0.yaml").write_text(dump_recipe(_recipe(
        TOOL, tool_lifecycle, ["tool.zip"], {"msg": "hi", "topic": "t/{iot:thingName}", "accessControl": policy,
                                              **extra}, [DATA])))
    return build


TOOL_RUN = (f'{sys.executable} {{artifacts:decompressedPath}}/tool/tool.py "{{configuration:/msg}}" '
            f'"{{{DATA}:artifacts:decompressedPath}}/data/hello.txt" "{{{DATA}:configuration:/port}}" "t/{{iot:thingName}}"')


def test_a_component_runs_as_under_the_nucleus(tmp_path):
    lifecycle = {"Setenv": {"GREETING": "from {iot:thingName}"},
                 "Install": {"Script": "echo installed >> installed.txt", "Skipif": "exists {work:path}/installed.txt"},
                 "Run": {"Script": TOOL_RUN}}
    build = _build(tmp_path, lifecycle)
    out = io.StringIO()
    nucleus = LocalNucleus(build, tmp_path / "root", "thing-1", merge={TOOL: {"msg": "merged"}}, output=out)
    result = nucleus.run(TOOL, duration=60)
    assert (result.state, result.exit_codes, result.reported_states) == ("FINISHED", [0], ["RUNNING"])
    assert [(m["topic"], m["qos"], m["message"]) for m in result.published] == [("t/thing-1", 1, {"msg": "merged"})]
    work = tmp_path / "root" / "work" / TOOL
    seen = json.loads((work / "out.json").read_text())
    assert seen == {"msg": "merged", "data": "hello", "port": "8", "cwd": str(work), "refused": True,
                    "thing": "thing-1", "svcuid": True, "greeting": "from thing-1", "config_topic": "t/thing-1"}
    assert (tmp_path / "root" / "packages" / "artifacts" / DATA / "1.0.0" / "data.zip").is_file()

    # again on the same root: Install's Skipif holds
    out = io.StringIO()
    result = LocalNucleus(build, tmp_path / "root", "thing-1", output=out).run(TOOL, duration=60)
    assert result.state == "FINISHED" and "Install skipped" in out.getvalue()
    assert (work / "installed.txt").read_text() == "installed\n"


def test_errors_recover_then_broken(tmp_path):
    build = _build(tmp_path, {"Run": "exit 3", "Recover": {"Script": "echo r >> {work:path}/recovered"}})
    result = LocalNucleus(build, tmp_path / "root", output=io.StringIO()).run(TOOL, duration=60)
    assert result.state == "BROKEN" and result.exit_codes == [3, 3, 3]
    assert (tmp_path / "root" / "work" / TOOL / "recovered").read_text() == "r\nr\n"


@pytest.mark.parametrize("script, code", [
    ("trap 'echo bye > {work:path}/bye; exit 0' TERM; while :; do sleep 0.1; done", 0),   # stops on SIGTERM
    ("trap '' TERM; while :; do sleep 0.1; done", -9),                                  # SIGKILL after the timeout
])
def test_stop_sigterm_then_sigkill(tmp_path, script, code):
    build = _build(tmp_path, {"Run": script})
    result = LocalNucleus(build, tmp_path / "root", shutdown_timeout=1, output=io.StringIO()).run(TOOL, duration=1)
    assert result.state == "STOPPED" and result.exit_codes == [code]
    assert (tmp_path / "root" / "work" / TOOL / "bye").exists() is (code == 0)


def test_install_timeout_and_failure(tmp_path):
    build = _build(tmp_path, {"Install": {"Script": "sleep 5", "Timeout": 1}, "Run": "true"})
    with pytest.raises(EdgecvError, match="Install timed out after 1 s"):
        LocalNucleus(build, tmp_path / "root", output=io.StringIO()).run(TOOL)
    build = _build(tmp_path / "b", {"Install": "exit 4", "Run": "true"})
    with pytest.raises(EdgecvError, match=r"Install failed \(exit 4\)"):
        LocalNucleus(build, tmp_path / "root2", output=io.StringIO()).run(TOOL)


def test_an_invalid_build_is_refused_before_anything_runs(tmp_path):
    build = _build(tmp_path, {"Run": "touch {work:path}/ran; echo {configuration:/missing}"})
    with pytest.raises(RecipeError, match=r"\{configuration:/missing\}: no such key"):
        LocalNucleus(build, tmp_path / "root", output=io.StringIO())
    assert not (tmp_path / "root").exists()
