"""The configuration reference, generated from the configuration records: ``docs/configuration.md`` and a JSON
Schema for the run configuration and for the Greengrass component's.

Everything comes from the records themselves (``edge/config.py``, ``greengrass/settings.py``): their fields, types,
defaults, bounds and descriptions, walked generically, so a new field or section appears here by regenerating:

    python -m edgecv.configdoc            (make docs)      write the files
    python -m edgecv.configdoc --check                     exit 1 if they differ from a fresh generation

``tests/test_configdoc.py`` checks that the files are current and that ``config.example.yaml`` shows every key of
the run configuration, or that the key is listed in ``NOT_IN_EXAMPLE`` with the reason.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from edgecv.edge.config import RunConfig
from edgecv.edge.typed import Record
from edgecv.greengrass.settings import ComponentConfig

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"
RUN_SCHEMA = ROOT / "docs" / "configuration.schema.json"
COMPONENT_SCHEMA = ROOT / "docs" / "component-configuration.schema.json"
EXAMPLE = ROOT / "config.example.yaml"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Keys of the run configuration that config.example.yaml does not show, and why. The test fails on a key that is
# neither shown nor listed here, and on an entry here that is shown (or no longer exists).
NOT_IN_EXAMPLE = {
    "tracker.low_score": "not shown yet: the ByteTrack second pass's floor; its default suits the shipped detectors",
    "mqtt.topic_prefix": "not shown yet: topics keep the default prefix unless a broker's ACLs need another",
    "mqtt.client_id": "not shown yet: derived from the device name; set it only where a broker assigns ids",
    "mqtt.keepalive": "not shown yet: the default suits brokers and NAT timeouts in common use",
    "mqtt.outbox": "not shown yet: the default folder under ~/.cache/edgecv suits a box with one user",
    "mqtt.dlr_topic": "not shown yet: only read with mqtt.format: dlr, whose topic is AWS's default",
    "mqtt.tls.insecure": "not shown yet: for testing against a broker with a self-signed certificate only",
}


# --- walking the records -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Key:
    """One key of a configuration: its dotted path (``[]`` for the items of a list) and its field."""
    path: str
    record: type
    field: dataclasses.Field
    type: Any

    @property
    def name(self) -> str:
        return self.field.metadata.get("alias", self.field.name)


def _options(tp) -> list:
    """The alternatives of a union (without None), or the type itself."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _is_record(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, Record)


def nested(tp) -> list[tuple[str, type]]:
    """The records a field's type holds, with the suffix their keys take: ``""`` for a section, ``"[]"`` for the
    items of a list, ``".*"`` for the values of a mapping."""
    out = []
    for option in _options(tp):
        origin, args = typing.get_origin(option), typing.get_args(option)
        if _is_record(option):
            out.append(("", option))
        elif origin in (list, tuple) and args:
            out += [("[]" + s, r) for a in args if a is not Ellipsis for s, r in nested(a)]
        elif origin is dict and len(args) == 2:
            out += [(".*" + s, r) for s, r in nested(args[1])]
    return list(dict.fromkeys(out))


def fields(record: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(record)
    return [(f, hints[f.name]) for f in dataclasses.fields(record)]


def keys(record: type, prefix: str = "", seen: tuple = ()) -> list[Key]:
    """Every key of ``record`` and of the records inside it, outermost first."""
    out = []
    for f, tp in fields(record):
        key = Key(prefix + f.metadata.get("alias", f.name), record, f, tp)
        out.append(key)
        for suffix, inner in nested(tp):
            if inner not in seen:
                out += keys(inner, key.path + suffix + ".", (*seen, record))
    return out


def sections(record: type, path: str = "", out: list | None = None) -> list[tuple[str, type, str | None]]:
    """(path, record, where it is described) of ``record`` and of every record inside it: each record's keys are
    described where it first appears (``None``); where it appears again, the path of that first place."""
    out = [] if out is None else out
    first = next((p for p, r, again in out if r is record and again is None), None)
    out.append((path, record, first))
    if first is not None:
        return out
    for f, tp in fields(record):
        for suffix, inner in nested(tp):
            sections(inner, f"{path}{'.' if path else ''}{f.metadata.get('alias', f.name)}{suffix}", out)
    return out


# --- the reference ---------------------------------------------------------------------------------------------

def type_text(tp) -> str:
    """A field's type in words."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        text = " or ".join(type_text(a) for a in args if a is not type(None))
        return text + (" or null" if type(None) in args else "")
    if origin is Literal:
        return " or ".join(f"`{json.dumps(a)}`" for a in args)
    if _is_record(tp):
        return "section"
    if origin in (list, tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return "[" + ", ".join(type_text(a) for a in args) + "]"
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is dict or tp is dict:
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}" if args else "mapping"
    return {bool: "boolean", int: "integer", float: "number", str: "text", Path: "path", Any: "any"}.get(tp, str(tp))


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain(value):
    if isinstance(value, Record):
        return value.dump()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def default_text(f: dataclasses.Field) -> str:
    value = _default(f)
    if value is dataclasses.MISSING:
        return "required"
    if isinstance(value, Record):
        return "(the section's defaults)"
    if value is None:
        return "unset"
    return f"`{json.dumps(_plain(value))}`"


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def limits_text(f: dataclasses.Field) -> str:
    meta = f.metadata
    parts = [f"{sign} {meta[name]}" for name, sign in _BOUNDS if name in meta]
    if "min_length" in meta:
        parts.append(f"at least {meta['min_length']}")
    if "max_length" in meta:
        parts.append(f"at most {meta['max_length']}")
    if "pattern" in meta:
        parts.append(f"matches `{meta['pattern']}`")
    if "check" in meta:
        parts.append("validated further")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(record: type, path: str, only=None) -> list[str]:
    lines = ["| key | type | default | limits | meaning |", "|---|---|---|---|---|"]
    for f, tp in fields(record):
        if only is not None and f.name not in only:
            continue
        name = f.metadata.get("alias", f.name)
        full = f"{path}{path and '.'}{name}"
        meaning = f.metadata.get("description", "")
        subs = nested(tp)
        if subs:
            meaning = (meaning + "; " if meaning else "") + ", ".join(f"see `{full}{s}`" for s, _ in subs)
        prose = meaning.replace("<", "&lt;").replace(">", "&gt;")          # <prefix> is not an HTML tag
        lines.append(f"| `{full}` | {_cell(type_text(tp))} | {_cell(default_text(f))} | {_cell(limits_text(f))} | "
                     f"{_cell(prose)} |")
    return lines


def _doc_heading(path: str, record: type) -> str:
    return f"### `{path}`" if path else "### Top level"


def render_doc() -> str:
    own = [f.name for f, _ in fields(ComponentConfig)
           if f.name not in RunConfig.fields() or _field(ComponentConfig, f.name) != _field(RunConfig, f.name)]
    out = [
        "# Configuration reference",
        "",
        "Generated from the configuration records (`edge/config.py`, `greengrass/settings.py`) by "
        "`python -m edgecv.configdoc` (`make docs`); do not edit by hand. Every key is optional unless it says "
        "*required*; an unknown key or a bad value is an error naming the key, before anything runs.",
        "",
        "- JSON Schema of the run configuration: [`configuration.schema.json`](configuration.schema.json); of the "
        "Greengrass component's: [`component-configuration.schema.json`](component-configuration.schema.json) "
        "(editors can check a YAML file against them; the records also run the checks a schema can't express, "
        "such as polygons that cross themselves).",
        "- An example with comments: [`config.example.yaml`](../config.example.yaml).",
        "",
        "## The run configuration (`edgecv run --config FILE.yaml`)",
        "",
        "CLI flags override some keys: `--mqtt` (`mqtt.url`), `--device-name` (`device`), `--streams` (`streams`), "
        "`--http` (`http.listen`). Coordinates of lines and zones are fractions of the frame (0..1).",
        "",
    ]
    for path, record, described in sections(RunConfig):
        if described is None:
            out += [_doc_heading(path, record), "", *_table(record, path), ""]
            continue
        same = ", ".join(f"`{k.path}`" for k in keys(record, f"{path}."))
        out += [_doc_heading(path, record), "", f"The keys of `{described}`, with the same types, defaults and meaning: "
                f"{same}.", ""]
    out += [
        "## The Greengrass component (`com.edgecv.Counter`)",
        "",
        "Its configuration is the run configuration above (without `http`: the web view doesn't run inside "
        "Greengrass) plus the keys below. Values that arrive as strings from a deployment (`\"0.5\"`, `\"true\"`, "
        "JSON text for a list) are read as the declared types first. `accessControl` is written by `edgecv "
        "component build` for exactly the topics the configuration publishes to.",
        "",
        *_table(ComponentConfig, "", only=own),
        "",
    ]
    return "\n".join(out)


def _field(record: type, name: str) -> tuple:
    f = next(f for f in dataclasses.fields(record) if f.name == name)
    return f.default, f.default_factory, dict(f.metadata)


# --- JSON Schema -----------------------------------------------------------------------------------------------

def _type_schema(tp, defs: dict) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return {}
    if origin in (Union, types.UnionType):
        options = [_type_schema(a, defs) for a in args if a is not type(None)]
        if type(None) in args:
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin is Literal:
        return {"enum": list(args)}
    if _is_record(tp):
        _record_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if origin in (list, tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return {"type": "array", "prefixItems": [_type_schema(a, defs) for a in args], "items": False,
                    "minItems": len(args)}
        return {"type": "array", **({"items": _type_schema(args[0], defs)} if args else {})}
    if origin is dict or tp is dict:
        return {"type": "object", **({"additionalProperties": _type_schema(args[1], defs)} if args else {})}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"edgecv.configdoc can't describe fields of type {tp!r}")


def _constraints(f: dataclasses.Field, tp) -> dict:
    meta, out = f.metadata, {}
    for name, key in (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"), ("lt", "exclusiveMaximum")):
        if name in meta:
            out[key] = meta[name]
    text = any(o is str for o in _options(tp))
    for name, key in (("min_length", "minLength" if text else "minItems"),
                      ("max_length", "maxLength" if text else "maxItems")):
        if name in meta:
            out[key] = meta[name]
    if "pattern" in meta:
        out["pattern"] = meta["pattern"]
    return out


def _constrained(schema: dict, limits: dict) -> dict:
    """``limits`` apply to the value, not to a null beside it."""
    if not limits:
        return schema
    if "anyOf" in schema:
        return {"anyOf": [o if o.get("type") == "null" else {**o, **limits} for o in schema["anyOf"]]}
    return {**schema, **limits}


def _record_schema(record: type, defs: dict) -> None:
    if record.__name__ in defs:
        return
    defs[record.__name__] = {}                     # placeholder: records may refer to each other
    properties, required = {}, []
    for f, tp in fields(record):
        name = f.metadata.get("alias", f.name)
        prop = _constrained(_type_schema(tp, defs), _constraints(f, tp))
        if f.metadata.get("description"):
            prop = {"description": f.metadata["description"], **prop}
        default = _default(f)
        if default is dataclasses.MISSING:
            required.append(name)
        elif not isinstance(default, Record):
            prop["default"] = _plain(default)
        properties[name] = prop
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    defs[record.__name__] = schema


def render_schema(record: type, title: str, drop=()) -> str:
    defs: dict = {}
    _record_schema(record, defs)
    root = defs.pop(record.__name__)
    for name in drop:
        root["properties"].pop(name, None)
    schema = {"$schema": SCHEMA_DIALECT, "title": title,
              "description": "Generated from edgecv's configuration records by python -m edgecv.configdoc.",
              **root, "$defs": dict(sorted(defs.items()))}
    return json.dumps(schema, indent=2) + "\n"


def render() -> dict[Path, str]:
    """Every generated file and what it should hold."""
    return {
        DOC: render_doc(),
        RUN_SCHEMA: render_schema(RunConfig, "edgecv run configuration"),
        COMPONENT_SCHEMA: render_schema(ComponentConfig, "com.edgecv.Counter configuration", drop=("http",)),
    }


# --- what config.example.yaml shows ------------------------------------------------------------------------------

_COMMENTED_KEY = re.compile(r"^(\s*)# ?(\s*(?:- )?[A-Za-z_][\w-]*:(\s.*)?)$")


def example_data(text: str) -> dict:
    """The example's keys, commented-out ones included (``# username: edge``): each commented line that reads
    as a key is uncommented if the document still parses."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _COMMENTED_KEY.match(line)
        if match:
            trial = lines[:i] + [match.group(1) + match.group(2)] + lines[i + 1:]
            try:
                parsed = yaml.safe_load("\n".join(trial))
            except yaml.YAMLError:
                continue
            if isinstance(parsed, dict):
                lines = trial
    return yaml.safe_load("\n".join(lines)) or {}


def shown_keys(data, record: type, prefix: str = "") -> set[str]:
    """The dotted paths of ``record``'s keys that ``data`` sets, following the records inside."""
    out: set[str] = set()
    if not isinstance(data, dict):
        return out
    for f, tp in fields(record):
        name = f.metadata.get("alias", f.name)
        if name not in data:
            continue
        path = prefix + name
        out.add(path)
        value = data[name]
        for suffix, inner in nested(tp):
            if suffix == "":
                out |= shown_keys(value, inner, path + ".")
            elif suffix.startswith("[]") and isinstance(value, list):
                for item in value:
                    out |= shown_keys(item, inner, path + "[].")
            elif suffix.startswith(".*") and isinstance(value, dict):
                for item in value.values():
                    out |= shown_keys(item, inner, path + ".*.")
    return out


def covered_keys(data, record: type = RunConfig) -> set[str]:
    """``shown_keys``, plus the keys of a record that appears again at another path (a camera's own ``counting``)
    whose counterparts are shown where the record is described: an example shows a section's keys once."""
    shown = shown_keys(data, record)
    for path, repeated, described in sections(record):
        if described is not None:
            shown |= {f"{path}.{k.path}" for k in keys(repeated) if f"{described}.{k.path}" in shown}
    return shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecv.configdoc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the files are current")
    args = parser.parse_args(argv)
    stale = [path for path, text in render().items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is not current: run python -m edgecv.configdoc (make docs)",
                  file=sys.stderr)
        return 1 if stale else 0
    for path, text in render().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"{path.relative_to(ROOT)}{' (changed)' if path in stale else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
