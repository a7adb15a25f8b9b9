"""The configuration reference, rendered from the config schema: a script and an MkDocs hook.

The schema (``src/gridtrain/schemas/config.schema.yaml``, JSON Schema written in YAML) is the one
place that defines every configuration key, its type and its default; gridtrain validates against
it and Snakemake does too. ``docs/reference/configuration.md`` holds its rendering as markdown,
committed so that the page reads right on GitHub and in a checkout, between the markers
``<!-- config-schema:begin -->`` and ``<!-- config-schema:end -->``; the text above them is
written by hand. After a change to the schema, regenerate the page (written atomically) with

    .venv/bin/python docs/hooks/schema_reference.py            # --check: only say whether stale

As a hook (mkdocs.yml), it checks the page against the schema: a stale page is logged as an
error, which fails ``mkdocs build --strict`` (``make docs``), and the page is shown freshly
rendered (so ``mkdocs serve`` follows schema edits). A build whose pages hold no marker fails:
the reference would be missing. ``tests/test_docs.py`` checks the committed page too.

Every key is listed with its path (``train.condor.profile``), type and constraints, default,
allowed values and description. Objects with keys of their own get a section each; arrays of
objects list their items' keys under ``path[]``, maps of objects (``additionalProperties`` with a
schema) under ``path.<name>``; ``oneOf``/``anyOf`` alternatives are shown as "or", and an
alternative with keys of its own gets its own section. Local ``$ref`` (``#/$defs/...``) and
``allOf`` are resolved.

Standard library, PyYAML and MkDocs only.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from mkdocs.exceptions import PluginError

BEGIN = "<!-- config-schema:begin -->"
END = "<!-- config-schema:end -->"
SCHEMA = Path("src/gridtrain/schemas/config.schema.yaml")  # relative to mkdocs.yml
PAGE = Path("docs/reference/configuration.md")  # relative to mkdocs.yml
COMMAND = ".venv/bin/python docs/hooks/schema_reference.py"
ROOT = Path(__file__).resolve().parents[2]  # the checkout: mkdocs.yml's folder
# The page's first lines, written by the script: what is generated and how to regenerate it.
HEADER = f"""<!--
  Generated in part: the tables between the config-schema markers below are rendered
  from {SCHEMA.as_posix()}. After changing the schema, regenerate them
  from the checkout's root with

      {COMMAND}

  and commit the result; tests/test_docs.py and `make docs` fail while they are stale.
  The text above the markers is written by hand.
-->
"""
MAX_DEPTH = 20  # levels of keys below the top; deeper means a $ref that refers to itself


# A stale page is logged as an error, not a warning: `--strict` aborts on either, but `--quiet`
# (as `make docs` runs) sets mkdocs' logger to ERROR, so a warning would never be counted.
log = logging.getLogger("mkdocs.hooks.schema_reference")


class _State:
    schema_path: Path | None = None  # set by on_config
    marker_seen = False  # whether a page held the marker in this build


_state = _State()

Schema = dict[str, Any]


# --- MkDocs events -------------------------------------------------------------------------------


def on_config(config: Any) -> Any:
    _state.schema_path = Path(config.config_file_path).resolve().parent / SCHEMA
    _state.marker_seen = False
    if not _state.schema_path.is_file():
        raise PluginError(f"schema_reference hook: {_state.schema_path} not found")
    return config


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    if _state.schema_path is not None:
        server.watch(str(_state.schema_path))  # `mkdocs serve` rebuilds when the schema changes
    return server


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if BEGIN not in markdown:
        return markdown
    _state.marker_seen = True
    assert _state.schema_path is not None
    fresh = generate_page(markdown, load_schema(_state.schema_path))
    if fresh != markdown:
        log.error(
            "%s is stale: its configuration tables differ from what %s generates; "
            "regenerate it with `%s`",
            page.file.src_uri,
            SCHEMA,
            COMMAND,
        )
    return fresh


def on_post_build(config: Any) -> None:
    if not _state.marker_seen:
        raise PluginError(
            f"schema_reference hook: no page holds {BEGIN}; the configuration reference "
            f"({PAGE}) would be empty"
        )


# --- The page ------------------------------------------------------------------------------------


def load_schema(path: Path) -> Schema:
    schema = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(schema, dict):
        raise PluginError(f"schema_reference: {path} is not a schema (a mapping)")
    return schema


def generate_page(page: str, schema: Schema) -> str:
    """The page as it should read: ``HEADER``, the hand-written text of ``page`` (everything
    between its leading HTML comment, if any, and ``BEGIN``), then the schema rendered between
    ``BEGIN`` and ``END``. Whatever ``page`` held between the markers, or after ``END``, is
    replaced."""
    if page.count(BEGIN) != 1 or page.count(END) != 1 or page.index(BEGIN) > page.index(END):
        raise PluginError(f"schema_reference: the page must hold {BEGIN} then {END}, once each")
    intro = page[: page.index(BEGIN)]
    if intro.startswith("<!--") and "-->" in intro:
        intro = intro[intro.index("-->") + 3 :].lstrip("\n")
    return f"{HEADER}{intro}{BEGIN}\n\n{render(schema)}\n{END}\n"


def write_page(page: Path, schema: Path) -> bool:
    """Regenerate ``page`` from ``schema`` in place, atomically (a temporary file in the same
    folder, then a rename; its mode is kept). False if it was already current."""
    current = page.read_text(encoding="utf-8")
    fresh = generate_page(current, load_schema(schema))
    if fresh == current:
        return False
    fd, temporary = tempfile.mkstemp(prefix=f".{page.name}.", suffix=".tmp", dir=page.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(fresh)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, page.stat().st_mode & 0o7777)
        os.replace(temporary, page)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"Regenerate {PAGE} from {SCHEMA} (the tables between its markers)."
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the page is stale"
    )
    parser.add_argument("--page", type=Path, default=ROOT / PAGE, help=f"({PAGE})")
    parser.add_argument("--schema", type=Path, default=ROOT / SCHEMA, help=f"({SCHEMA})")
    args = parser.parse_args(argv)
    if args.check:
        current = args.page.read_text(encoding="utf-8")
        if generate_page(current, load_schema(args.schema)) != current:
            print(f"{args.page} is stale; regenerate it with `{COMMAND}`", file=sys.stderr)
            return 1
        print(f"{args.page} is current")
        return 0
    changed = write_page(args.page, args.schema)
    print(f"{args.page} {'regenerated' if changed else 'was already current'}")
    return 0


# --- Rendering -----------------------------------------------------------------------------------


def render(root: Schema) -> str:
    """Markdown for a whole schema: its description, then one section per object with keys."""
    renderer = _Renderer(root)
    root = renderer.resolve(root)
    lines: list[str] = []
    if root.get("description"):
        lines += [_text(root["description"]), ""]
    required = set(root.get("required", []))
    top = root.get("properties", {})
    if top:
        rows = [(name, renderer.resolve(sub), name in required) for name, sub in top.items()]
        lines += [*_table(rows, renderer), ""]
    for name, sub in top.items():
        for section in renderer.children(name, sub):
            renderer.section(section, lines, level=2)
    return "\n".join(lines).rstrip() + "\n"


class _Renderer:
    def __init__(self, root: Schema) -> None:
        self.root = root

    def resolve(self, schema: Any) -> Schema:
        """The schema with a local ``$ref`` followed and ``allOf`` merged into it."""
        if not isinstance(schema, dict):
            return {}
        schema = dict(schema)
        seen: set[str] = set()
        while "$ref" in schema:
            ref = schema.pop("$ref")
            if not isinstance(ref, str) or not ref.startswith("#/") or ref in seen:
                raise PluginError(f"schema_reference hook: cannot resolve $ref {ref!r}")
            seen.add(ref)
            target: Any = self.root
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            schema = {**target, **schema}
        for part in schema.pop("allOf", []):
            part = self.resolve(part)
            merged = {**part, **schema}
            if "properties" in part or "properties" in schema:
                merged["properties"] = {
                    **part.get("properties", {}),
                    **schema.get("properties", {}),
                }
            if "required" in part or "required" in schema:
                merged["required"] = [*part.get("required", []), *schema.get("required", [])]
            schema = merged
        return schema

    def children(self, path: str, schema: Schema, note: str = "") -> list[_Section]:
        """The objects with keys of their own at or below a key (its list items, map values and
        alternatives), each to get a section."""
        if path.count(".") + path.count("[]") > MAX_DEPTH:
            raise PluginError(f"schema_reference hook: {path} nests too deep (a recursive $ref?)")
        schema = self.resolve(schema)
        found: list[_Section] = []
        if _has_keys(schema):
            found.append(_Section(path, note, schema))
        items = self.resolve(schema.get("items"))
        if items:
            found += self.children(f"{path}[]", items, note)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            found += self.children(f"{path}.<name>", extra, note)
        for word in ("oneOf", "anyOf"):
            options = [self.resolve(o) for o in schema.get(word, [])]
            keyed = [(n, o) for n, o in enumerate(options, 1) if self.children(path, o)]
            for number, option in keyed:
                alternative = f"alternative {number} of {len(options)}"
                found += self.children(
                    path, option, f"{note}, {alternative}" if note else alternative
                )
        return found

    def section(self, section: _Section, lines: list[str], level: int) -> None:
        """A heading and a table for one object, then the sections of the objects below it."""
        path, schema = section.path, section.schema
        note = f" ({section.note})" if section.note else ""
        lines += [f"{'#' * min(level, 6)} `{path}`{note} {{#{section.anchor}}}", ""]
        intro = []
        if schema.get("description"):
            intro.append(_sentence(_text(schema["description"])))
        if path.endswith("[]"):
            intro.append("Each item of the list is an object with these keys.")
        elif path.endswith(".<name>"):
            intro.append(
                "Each key of the map is a name you choose; its value is an object with these keys."
            )
        if "default" in schema:
            intro.append(f"Default: `{_value(schema['default'])}`.")
        if schema.get("additionalProperties") is False:
            intro.append("Other keys are an error.")
        if intro:
            lines += [" ".join(intro), ""]
        required = set(schema.get("required", []))
        properties = schema.get("properties", {})
        rows = [
            (f"{path}.{name}", self.resolve(sub), name in required)
            for name, sub in properties.items()
        ]
        lines += [*_table(rows, self), ""]
        for name, sub in properties.items():
            for child in self.children(f"{path}.{name}", sub):
                self.section(child, lines, level + 1)


@dataclass(frozen=True)
class _Section:
    path: str  # dataset.samples[], dataset.jagged.<name>
    note: str  # "alternative 2 of 3" for a oneOf/anyOf branch, else ""
    schema: Schema

    @property
    def anchor(self) -> str:
        """An HTML id: ``train.condor`` stays, ``dataset.samples[]`` becomes
        ``dataset.samples-item``, ``dataset.jagged.<name>`` becomes ``dataset.jagged-name``."""
        text = self.path.replace("[]", "-item").replace(".<name>", "-name")
        if self.note:
            text += "-" + self.note.replace(" of ", "-of-")
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def _table(rows: list[tuple[str, Schema, bool]], renderer: _Renderer) -> list[str]:
    lines = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for path, schema, required in rows:
        key = f"`{path}`"
        below = renderer.children(path, schema)
        if below:
            key = f"[`{path}`](#{below[0].anchor})"
        type_ = _type(schema, renderer)
        if required:
            type_ += ", **required**"
        default = f"`{_value(schema['default'])}`" if "default" in schema else "\N{EN DASH}"
        description = _text(schema.get("description", ""))
        cells = [key, type_, default, description]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _type(schema: Schema, renderer: _Renderer) -> str:
    """Type, allowed values and constraints of one key, in a few words."""
    words: list[str] = []
    if "const" in schema:
        words.append(f"exactly `{_value(schema['const'])}`")
    if "enum" in schema:
        words.append("one of " + ", ".join(f"`{_value(v)}`" for v in schema["enum"]))
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    names = []
    for k in kinds:
        if k == "array":
            items = renderer.resolve(schema.get("items"))
            inner = _type(items, renderer) if items else ""
            if _has_keys(items):  # items that may also be plain values: "strings or objects"
                alone = items.get("type") if isinstance(items.get("type"), list) else []
                plain = [_list_of(k).removeprefix("list of ") for k in alone if k != "object"]
                names.append("list of " + " or ".join([*plain, "objects"]))
            else:
                names.append(_list_of(inner))
        elif k == "object" and isinstance(schema.get("additionalProperties"), dict):
            values = renderer.resolve(schema["additionalProperties"])
            names.append("map of objects" if _has_keys(values) else "map")
        else:
            names.append(k)
    if names:
        words.insert(0, " or ".join(names))
    for word in ("oneOf", "anyOf"):
        if word in schema:
            options = [renderer.resolve(o) for o in schema[word]]
            kinds_ = [_type(o, renderer) or "any" for o in options]
            words.append(" or ".join(f"({k})" if ", " in k else k for k in kinds_))
    words += _constraints(schema)
    return ", ".join(w for w in words if w)


def _list_of(inner: str) -> str:
    """``list of strings``, ``list of (integer, ≥ 1)``, or ``list`` for items of any type."""
    if not inner:
        return "list"
    plural = {"string": "strings", "integer": "integers", "number": "numbers"}
    plural |= {"boolean": "booleans", "object": "objects", "array": "lists", "null": "nulls"}
    return f"list of {plural[inner]}" if inner in plural else f"list of ({inner})"


def _constraints(schema: Schema) -> list[str]:
    found = []
    for key, symbol in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ):
        if key in schema:
            found.append(f"{symbol} {_value(schema[key])}")
    if "minItems" in schema:
        found.append(f"at least {schema['minItems']} item{'s' if schema['minItems'] != 1 else ''}")
    if "maxItems" in schema:
        found.append(f"at most {schema['maxItems']} item{'s' if schema['maxItems'] != 1 else ''}")
    if "minLength" in schema:
        found.append(f"at least {schema['minLength']} characters")
    if "maxLength" in schema:
        found.append(f"at most {schema['maxLength']} characters")
    if "pattern" in schema:
        found.append(f"matching `{schema['pattern']}`")
    return found


def _has_keys(schema: Schema) -> bool:
    return bool(schema.get("properties"))


def _value(value: Any) -> str:
    """A value as it would be written in the YAML config: `data/toy`, `null`, `[run, event]`."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000)
    return text.strip().removesuffix("...").strip()


def _text(text: str) -> str:
    """Schema prose as markdown: one line, and ``<``, ``>``, ``&``, ``*`` shown as typed outside
    backtick code spans (``profiles/<name>/config.yaml`` is not an HTML tag)."""
    parts = " ".join(str(text).split()).split("`")
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        parts[i] = (
            parts[i]
            .replace("&", "&amp;")
            .replace("<", "&lt;")
            .replace(">", "&gt;")
            .replace("*", "\\*")
        )
    return "`".join(parts)


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


if __name__ == "__main__":
    sys.exit(main())
