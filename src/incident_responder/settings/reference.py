"""The settings described: the values in effect (``config``), and every setting of every
backend kind with its default and meaning (``config --markdown``, docs/settings.md)."""

from __future__ import annotations

from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

if TYPE_CHECKING:
    from incident_responder.settings import Settings


def reference() -> list[tuple[str, str, str]]:
    """Every setting of every backend kind as (env name, default, description), from the
    classes alone (the environment is not read): what docs/settings.md shows."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str, note: str) -> None:
        for name, info in model.model_fields.items():
            alias = info.validation_alias
            env = alias if isinstance(alias, str) else f"{prefix}{name.upper()}"
            sections = [
                t for t in _types_of(info.annotation) if isinstance(t, type) and issubclass(t, BaseModel)
            ]
            if len(sections) == 1:  # a nested section
                walk(sections[0], env + "__", note)
                continue
            if len(sections) > 1:  # one section per kind of backend
                kinds = [get_args(section.model_fields["kind"].annotation)[0] for section in sections]
                chosen = info.get_default(call_default_factory=True).kind
                rows.append((f"{env}__KIND", chosen, "one of: " + ", ".join(kinds)))
                for section in sections:
                    kind = get_args(section.model_fields["kind"].annotation)[0]
                    walk(section, env + "__", f"{env}__KIND={kind}: ")
                continue
            if name == "kind" and note:
                continue
            default = info.get_default(call_default_factory=True)
            if isinstance(default, SecretStr):
                shown = ""
            elif default is None or default is PydanticUndefined:
                shown = "" if default is None else "(required)"
            else:
                shown = str(default)
            rows.append((env, shown, note + (info.description or "")))

    from incident_responder.settings import Settings

    walk(Settings, "IR_", "")
    return rows


def reference_markdown() -> str:
    """docs/settings.md: every setting, its default and meaning, as a Markdown table."""
    lines = [
        "# Settings",
        "",
        "Every setting is an environment variable (nested sections joined by `__`), or the same",
        "name in a dotenv file named by `IR_CONFIG_FILE`; `incident-responder config` prints the",
        "values in effect. Sections of a backend kind apply once its `KIND` is chosen. This page is",
        "generated (`incident-responder config --markdown`); a test keeps it current.",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
    ]
    for env, default, meaning in reference():
        shown = f"`{default}`" if default else "-"
        lines.append(f"| `{env}` | {shown} | {meaning.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _types_of(annotation: Any) -> list[Any]:
    """The types an annotation names: itself, or the members of a union (Annotated unwrapped)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        return [t for member in get_args(annotation) for t in _types_of(member)]
    return [annotation]


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """Every setting as (env name, value with secrets masked, description)."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: BaseModel, prefix: str) -> None:
        for name, info in type(model).model_fields.items():
            value = getattr(model, name)
            alias = info.validation_alias
            env = alias if isinstance(alias, str) else f"{prefix}{name.upper()}"
            if isinstance(value, BaseModel):
                walk(value, env + "__")
                continue
            if isinstance(value, SecretStr):
                shown = "****" if value.get_secret_value() else ""
            else:
                shown = "" if value is None else str(value)
            rows.append((env, shown, info.description or ""))

    walk(settings, "IR_")
    return rows
