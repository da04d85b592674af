"""What every section of the project file shares: names, strictness, the error that lists several
problems."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

from store.keys import NAME

Name = Annotated[str, Field(pattern=NAME)]


# `<project>--<name>`: an adapter a Studio member trained (config/studio.py); a declared name
# may not contain it
STUDIO_SEPARATOR = "--"


class ConfigProblems(ValueError):
    """Several problems found across sections, each already starting with its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def reference_problems(path: str, value: str, table: Mapping[str, Any], table_name: str
                       ) -> list[str]:
    """A cross-reference to an entry that is not declared, saying which ones are."""
    if value in table:
        return []
    known = ", ".join(sorted(table)) or "none declared"
    return [f"{path}: '{value}' is not in {table_name} (declared: {known})"]
