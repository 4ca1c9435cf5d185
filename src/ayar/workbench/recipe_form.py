"""A recipe form generated from the recipe schema (:class:`ayar.recipe.Recipe`), for users who would rather not edit YAML.

Every scalar field of the top level and of the ``model``, ``data``, ``adapter`` and
``train`` sections becomes an input: a choice list for ``Literal`` fields, a checkbox
for booleans, a number or text box otherwise, with the field's default and its
description (the text ``--help`` and the README's reference show). Lists, mappings and
the optional method sections keep their defaults; edit the YAML for those.

A submitted form is written as a recipe file holding only what differs from the
defaults, then validated by :func:`ayar.recipe.load_recipe` with ``check_files``, so
its problems are ``ayar check``'s own messages; a recipe with problems is not kept.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic_core import PydanticUndefined

from ayar.errors import AyarError

SECTIONS = ("model", "data", "adapter", "train")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")


@dataclass(frozen=True)
class FormField:
    name: str  # dotted: "train.learning_rate"
    kind: str  # choice, bool, int, float, text
    default: Any  # PydanticUndefined for required fields
    choices: tuple[str, ...]
    help: str

    @property
    def required(self) -> bool:
        return self.default is PydanticUndefined

    @property
    def shown(self) -> str:
        """The default as the input's initial text."""
        return "" if self.required or self.default is None else str(self.default)


def _kind(annotation: Any) -> tuple[str, tuple[str, ...]] | None:
    """The input kind for a field's type (None: not a scalar the form can hold)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _kind(rest[0]) if len(rest) == 1 else None
    if typing.get_origin(annotation) is Literal:
        return "choice", tuple(str(a) for a in args)
    return {bool: ("bool", ()), int: ("int", ()), float: ("float", ()), str: ("text", ())}.get(annotation)


def _fields(model: type, prefix: str) -> list[FormField]:
    out = []
    for name, info in model.model_fields.items():
        kind = _kind(info.annotation)
        if kind is not None:
            out.append(FormField(f"{prefix}{name}", kind[0], info.get_default(call_default_factory=True)
                                 if not info.is_required() else PydanticUndefined, kind[1], info.description or ""))
    return out


def form_sections() -> list[tuple[str, list[FormField]]]:
    """``[(section title, fields), ...]``: the top level first, then the sections."""
    from ayar.recipe import Recipe

    sections = [("recipe", _fields(Recipe, ""))]
    for name in SECTIONS:
        sections.append((name, _fields(Recipe.model_fields[name].annotation, f"{name}.")))
    return sections


def recipe_from_form(values: dict[str, str]) -> dict[str, Any]:
    """The recipe dict a submitted form describes: required fields and changed defaults only."""
    recipe: dict[str, Any] = {}
    for _, fields in form_sections():
        for field in fields:
            raw = values.get(field.name)
            if field.kind == "bool":
                value: Any = raw in ("on", "true", "1")
            elif raw is None or raw.strip() == "":
                continue
            else:
                value = _parse(raw.strip(), field.kind)
            if not field.required and value == field.default:
                continue
            section, _, key = field.name.rpartition(".")
            (recipe.setdefault(section, {}) if section else recipe)[key] = value
    return recipe


def _parse(text: str, kind: str) -> Any:
    """A number box's text as a number (pydantic reports what cannot be one, by the field's name)."""
    try:
        return int(text) if kind == "int" else float(text) if kind == "float" else text
    except ValueError:
        return text


def save_recipe(workspace: Path, name: str, values: dict[str, str]) -> Path:
    """Write ``WORKSPACE/NAME.yaml`` from the form, keeping it only when ``ayar check`` passes.

    Raises:
        AyarError: a bad or taken file name; RecipeError: the recipe's problems (the file is removed).
    """
    from ayar.recipe import load_recipe

    stem = name.removesuffix(".yaml")
    if not NAME.match(stem):
        raise AyarError(f"recipe name {name!r}: use letters, digits and ._- (it becomes WORKSPACE/{stem}.yaml)")
    path = workspace / f"{stem}.yaml"
    if path.exists():
        raise AyarError(f"{path.name} exists in the workspace; choose another name")
    path.write_text(yaml.safe_dump(recipe_from_form(values), sort_keys=False, allow_unicode=True), encoding="utf-8")
    try:
        load_recipe(path, [], check_files=True)
    except AyarError:
        path.unlink(missing_ok=True)
        raise
    return path
