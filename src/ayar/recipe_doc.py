"""Documentation generated from the recipe schema: the ``ayar init`` starter and the README reference.

Each field is described once, in :mod:`ayar.recipe`; both texts below are
derived from those descriptions and defaults, and a test keeps the README's
copy identical to :func:`reference_markdown`.
"""

from __future__ import annotations

import json
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


def reference_markdown() -> str:
    """The recipe reference as a Markdown table per section."""
    out = []
    for name, field in _sections():
        if _is_section(field):
            out.append(f"**`{name}`** — {field.description}\n")
            out.append("| key | default | meaning |")
            out.append("| --- | --- | --- |")
            for sub, subfield in field.annotation.model_fields.items():
                default = "required" if subfield.is_required() else f"`{json.dumps(_default(subfield, ''))}`"
                out.append(f"| `{name}.{sub}` | {default} | {subfield.description} |")
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
