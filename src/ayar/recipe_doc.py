"""Documentation generated from the recipe schema: the ``ayar init`` starter and the README reference.

Each field is described once, in :mod:`ayar.recipe`; both texts below are
derived from those descriptions and defaults, and a test keeps the README's
copy identical to :func:`reference_markdown`.
"""

from __future__ import annotations

import json
import typing
from typing import Any

import yaml
from pydantic import BaseModel

from ayar.recipe import Recipe

# Values for required fields in the starter recipe (they have no default).
STARTER_VALUES: dict[str, Any] = {
    "model.path": "Qwen/Qwen2.5-0.5B-Instruct",
    "data.train": "data/train.jsonl",
    "data.val": "data/val.jsonl",
}


def _sections() -> list[tuple[str, Any]]:
    return list(Recipe.model_fields.items())


def _is_section(field) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def _default(field, dotted: str) -> Any:
    if dotted in STARTER_VALUES:
        return STARTER_VALUES[dotted]
    if field.is_required():
        return None
    value = field.get_default(call_default_factory=True)
    return list(value) if isinstance(value, tuple) else value


def _yaml_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def starter_recipe() -> str:
    """A complete, commented recipe: every field with its description and default."""
    lines = ["# ayar recipe: `ayar check` validates it, `ayar train` runs it.",
             "# Relative paths are resolved against this file's folder.", ""]
    for name, field in _sections():
        if _is_section(field):
            lines.append(f"# {field.description}")
            lines.append(f"{name}:")
            for sub, subfield in field.annotation.model_fields.items():
                lines.append(f"  # {subfield.description}")
                lines.append(f"  {sub}: {_yaml_value(_default(subfield, f'{name}.{sub}'))}")
        else:
            lines.append(f"# {field.description}")
            lines.append(f"{name}: {_yaml_value(_default(field, name))}")
        lines.append("")
    return "\n".join(lines)


def _type_name(field) -> str:
    schema = field.annotation
    text = getattr(schema, "__name__", None) or str(schema).replace("typing.", "")
    return text.replace("Literal", "one of ").replace("NoneType", "null")


def _section_model(annotation) -> type[BaseModel] | None:
    """The section class of ``Section`` or ``Section | None`` (None for plain values)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
        return members[0]
    return None


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    """Table rows for a section's fields, nested sections expanded with dotted keys."""
    rows = []
    for sub, subfield in model.model_fields.items():
        nested = _section_model(subfield.annotation)
        if nested is not None:
            rows.append(f"| `{prefix}.{sub}` | {'`null`' if subfield.default is None else 'section'} | "
                        f"{subfield.description} |")
            rows += _rows(nested, f"{prefix}.{sub}")
            continue
        default = "required" if subfield.is_required() else f"`{json.dumps(_default(subfield, ''))}`"
        rows.append(f"| `{prefix}.{sub}` | {default} | {subfield.description} |")
    return rows


def reference_markdown() -> str:
    """The recipe reference as a Markdown table per section (optional sections included)."""
    out = []
    for name, field in _sections():
        model = _section_model(field.annotation)
        if model is not None:
            optional = "" if _is_section(field) else " Optional (null: not used)."
            out.append(f"**`{name}`** — {field.description}{optional}\n")
            out.append("| key | default | meaning |")
            out.append("| --- | --- | --- |")
            out += _rows(model, name)
            out.append("")
        else:
            default = "required" if field.is_required() else f"`{json.dumps(_default(field, ''))}`"
            out.append(f"**`{name}`** (default {default}) — {field.description}\n")
    return "\n".join(out).strip() + "\n"


START, END = "<!-- recipe-reference:start -->\n", "<!-- recipe-reference:end -->"


def update_readme(path: str = "README.md") -> bool:
    """Rewrite the recipe reference between the README's markers; True if it changed."""
    from pathlib import Path

    readme = Path(path)
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = head + START + reference_markdown() + END + tail
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    print("README.md updated" if update_readme() else "README.md already current")
