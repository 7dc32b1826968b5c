"""Recipes: what edgecv writes is valid, what the nucleus would refuse is refused with a line naming the field,
and the nucleus' rules (manifest selection, global lifecycle, variables, version ranges) as run-local applies
them."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from edgecv.edge.config import RunConfig
from edgecv.greengrass.recipes import (RecipeError, VariableContext, check_build, check_recipe, counter_recipe,
                                       dump_recipe, lifecycle, load_recipe, model_recipe, select_manifest, substitute,
                                       variables, version_matches)
from edgecv.greengrass.settings import default_configuration

MODEL = "com.edgecv.model.ssd"
COUNTER = "com.edgecv.Counter"


def _pair(model_archs=("x86_64", "aarch64"), counter_archs=("x86_64", "aarch64")):
    model = model_recipe(MODEL, "1.0.0", "ssd", {a: f"ssd-{a}.zip" for a in model_archs}, "BUCKET_NAME")
    counter = counter_recipe(COUNTER, "1.0.0", MODEL, "1.0.0", "edgecv-0.1.0-py3-none-any.whl",
                             default_configuration(RunConfig(), "0"), "BUCKET_NAME", counter_archs)
    return counter, model


def _errors(counter, model=None):
    others = {COUNTER: counter, **({MODEL: model} if model is not None else {})}
    return check_recipe(counter, others) + (check_recipe(model, others) if model is not None else [])


def test_written_recipes_are_valid_and_round_trip(tmp_path):
    counter, model = _pair()
    assert _errors(counter, model) == []
    path = tmp_path / "c.yaml"
    path.write_text(dump_recipe(counter))
    assert "&id" not in path.read_text()                       # no YAML anchors: every value written out
    loaded = load_recipe(path)
    assert loaded == counter
    lc = lifecycle(loaded, select_manifest(loaded, {"os": "linux", "architecture": "amd64"}))
    assert lc["Install"]["Timeout"] == 1200 and "Skipif" in lc["Install"] and "Recover" in lc
    assert "edgecv[" not in lc["Install"]["Script"] or "[edge,greengrass]" in lc["Install"]["Script"]
    assert "mxnet" not in lc["Install"]["Script"].lower()


def _set(recipe, path, value):
    node = recipe
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value


_DELETE = object()
_RUN = ("Lifecycle", "Run", "Script")


@pytest.mark.parametrize("path, value, expected", [
    (("ComponentName",), _DELETE, "ComponentName None is missing"),
    (("ComponentVersion",), "1.0", "is not a semantic version"),
    (("RecipeFormatVersion",), "2021-01-01", "RecipeFormatVersion must be '2020-01-25'"),
    (("ComponentPublisher",), _DELETE, "ComponentPublisher is missing"),
    (("Lifecycles",), {}, "unknown key 'Lifecycles'"),
    (("Manifests",), [], "Manifests must list at least one platform"),
    (("Lifecycle", "Startup"), {"Script": "true"}, "a lifecycle has Run or Startup, not both"),
    (("Lifecycle", "Install", "Timeout"), "soon", "Lifecycle.Install.Timeout must be a positive number"),
    (("Lifecycle", "Install", "Skipif"), "whenever", "Skipif must be 'onpath CMD' or 'exists FILE'"),
    (("Manifests", 0, "Artifacts", 0, "Unarchive"), "TAR", "Unarchive must be NONE or ZIP"),
    (("Manifests", 0, "Artifacts", 0, "URI"), "https://example.com/x.zip", "is not an s3:// URI"),
    (_RUN, "run {configuration:/nope/deeper}", "{configuration:/nope/deeper}: no such key in the default configuration"),
    (_RUN, "run {com.other.Thing:artifacts:path}", "names com.other.Thing, which is not a direct dependency"),
    (_RUN, "run {artifacts:decompressedPath}/elsewhere/x", "no ZIP artifact elsewhere.zip unpacks there"),
    (_RUN, "run {com.edgecv.model.ssd:artifacts:decompressedPath}/ssd-x86_64/x", None),   # fine on amd64...
    (_RUN, "run {artifacts:nonsense}", "{artifacts:nonsense} is not a recipe variable"),
    (("ComponentDependencies", MODEL, "VersionRequirement"), "^2.0.0", "needs com.edgecv.model.ssd ^2.0.0, but the build has 1.0.0"),
    (("ComponentDependencies", MODEL, "DependencyType"), "STRONG", "DependencyType must be HARD or SOFT"),
    (("ComponentConfiguration", "DefaultConfiguration", "accessControl", "aws.greengrass.ipc.mqttproxy",
      "com.edgecv.Counter:mqttproxy:1", "resources"), "edgecv/#", "needs lists of operations and resources"),
])
def test_recipe_errors_name_the_field(path, value, expected):
    counter, model = _pair()
    _set(counter, path, value)
    errors = _errors(counter, model)
    if expected is None:
        # ...but the aarch64 manifest's model folder is ssd-aarch64: the check follows the platform
        assert errors == [f"{COUNTER}: Manifests[1]: Lifecycle.Run.Script: {{{MODEL}:artifacts:decompressedPath}}"
                          "/ssd-x86_64: no ZIP artifact ssd-x86_64.zip unpacks there"]
        return
    assert any(expected in e for e in errors), errors
    where = counter.get("ComponentName", "recipe")          # each line names the recipe (or says it has no name)
    assert all(e.startswith(f"{where}: ") and "\n" not in e for e in errors if not e.startswith(MODEL))


def test_platforms_must_be_covered_by_the_model():
    counter, model = _pair(model_archs=("x86_64",))
    errors = _errors(counter, model)
    assert errors == [f'{COUNTER}: Manifests[1]: platform {{"architecture": "aarch64", "os": "linux"}} is not '
                      f"covered by {MODEL}, a dependency (the deployment would fail there)"]


def test_dependency_missing_from_the_build():
    counter, _ = _pair()
    errors = check_recipe(counter, {COUNTER: counter})
    assert errors == [f"{COUNTER}: depends on {MODEL}, which is not in this build (recipes/{MODEL}-<version>.yaml)"]


def test_check_build_lists_every_problem_with_files(tmp_path):
    counter, model = _pair(model_archs=("x86_64",), counter_archs=("x86_64",))
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / f"{COUNTER}-1.0.0.yaml").write_text(dump_recipe(counter))
    (tmp_path / "recipes" / f"{MODEL}-1.0.0.yaml").write_text(dump_recipe(model))
    (tmp_path / "artifacts" / MODEL / "1.0.0").mkdir(parents=True)
    (tmp_path / "artifacts" / MODEL / "1.0.0" / "ssd-x86_64.zip").write_bytes(b"PK")
    with pytest.raises(RecipeError) as info:
        check_build(tmp_path)
    message = str(info.value)
    assert message.startswith(f"1 problem in {tmp_path}: recipes/{COUNTER}-1.0.0.yaml: Manifests[0]: artifact "
                              f"edgecv-runtime.zip not found in artifacts/{COUNTER}/1.0.0/")
    assert "\n" not in message
    (tmp_path / "artifacts" / COUNTER / "1.0.0").mkdir(parents=True)
    (tmp_path / "artifacts" / COUNTER / "1.0.0" / "edgecv-runtime.zip").write_bytes(b"PK")
    assert set(check_build(tmp_path)) == {COUNTER, MODEL}
    with pytest.raises(RecipeError, match="no recipes/ folder"):
        check_build(tmp_path / "artifacts")


def test_unquoted_format_version_and_bad_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("RecipeFormatVersion: 2020-01-25\nComponentName: a.B\n")
    assert load_recipe(path)["RecipeFormatVersion"] == "2020-01-25"      # YAML made it a date; Greengrass, text
    path.write_text("RecipeFormatVersion: [\n")
    with pytest.raises(RecipeError, match="not a readable recipe"):
        load_recipe(path)


def test_manifest_selection_and_global_lifecycle():
    recipe = {
        "Manifests": [
            {"Platform": {"os": "linux", "architecture": "/aarch64|arm/"}, "Selections": ["arm"]},
            {"Platform": {"os": "linux", "architecture": "*"}},
        ],
        "Lifecycle": {
            "Setenv": {"http_proxy": "p"},                       # lower-case env names are not selection keys
            "arm": {"Install": "echo arm"},
            "all": {"Install": {"Script": "echo any", "Timeout": 5}},
            "Run": {"Script": {"arm": "run-arm", "all": "run-any"}},
        },
    }
    arm = select_manifest(recipe, {"os": "linux", "architecture": "aarch64"})
    amd = select_manifest(recipe, {"os": "linux", "architecture": "amd64"})
    assert arm is recipe["Manifests"][0] and amd is recipe["Manifests"][1]
    assert select_manifest(recipe, {"os": "windows", "architecture": "amd64"}) is None
    assert lifecycle(recipe, arm) == {"Setenv": {"http_proxy": "p"}, "Run": {"Script": "run-arm"},
                                      "Install": {"Script": "echo arm"}}
    assert lifecycle(recipe, amd) == {"Setenv": {"http_proxy": "p"}, "Run": {"Script": "run-any"},
                                      "Install": {"Script": "echo any", "Timeout": 5}}


def test_variables_resolve_like_the_nucleus():
    context = VariableContext(
        component="a.Main", artifacts={"a.Main": Path("/gg/a"), "a.Dep": Path("/gg/d")},
        decompressed={"a.Main": Path("/gg/ua"), "a.Dep": Path("/gg/ud")}, work={"a.Main": Path("/gg/w")},
        configuration={"a.Main": {"msg": "hi", "n": 3, "on": True, "obj": {"x": [1, 2]}, "none": None},
                       "a.Dep": {"port": 8}},
        dependencies={"a.Dep"}, thing_name="thing-1", root=Path("/gg"))
    text = ("{artifacts:path} {artifacts:decompressedPath} {work:path} {configuration:/msg} {configuration:/n} "
            "{configuration:/on} {configuration:/obj} {configuration:/obj/x/1} {configuration:/none} "
            "{a.Dep:artifacts:decompressedPath} {a.Dep:configuration:/port} {iot:thingName} {kernel:rootPath} "
            "${HOME:-x} {\"json\":1}")
    assert substitute(text, context) == ('/gg/a /gg/ua /gg/w hi 3 true {"x":[1,2]} 2 null /gg/ud 8 thing-1 /gg '
                                         '${HOME:-x} {"json":1}')
    assert variables("${X:-y} {artifacts:path}") == ["artifacts:path"]
    for bad, why in [("{configuration:/missing}", "no such key"), ("{a.Other:work:path}", "not a direct dependency"),
                     ("{a.Dep:work:path}", "a.Dep is not installed here")]:
        with pytest.raises(RecipeError, match=why):
            substitute(bad, context)


@pytest.mark.parametrize("version, requirement, ok", [
    ("1.0.0", "1.0.0", True), ("1.0.1", "=1.0.0", False), ("1.4.2", "^1.0.0", True), ("2.0.0", "^1.0.0", False),
    ("0.1.9", "^0.1.0", True), ("0.2.0", "^0.1.0", False), ("1.0.9", "~1.0.0", True), ("1.1.0", "~1.0.0", False),
    ("1.5.0", ">=1.0.0 <2.0.0", True), ("2.0.0", ">=1.0.0 <2.0.0", False), ("3.0.0", "^1.0.0 || ^3.0.0", True),
    ("0.0.1", "*", True),
])
def test_version_ranges(version, requirement, ok):
    assert version_matches(version, requirement) is ok


def test_recipe_checks_do_not_modify_the_recipe():
    counter, model = _pair()
    before = copy.deepcopy(counter)
    _errors(counter, model)
    assert counter == before
