"""The control taxonomy: labels, their definitions and the control-list entries they relate to.

The taxonomy file is the single source of the label set. Training copies it into every artifact so
that a model folder is self-describing; serving reads it from the artifact, never from `data/`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serving.contract.errors import TaxonomyError

_LABEL_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class Category(BaseModel):
    """One label of the taxonomy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    display_name: str
    definition: str
    control_refs: list[str] = Field(min_length=1)
    product_types: list[str] = Field(min_length=1)
    hard_negatives: list[str] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        if not _LABEL_RE.match(value):
            raise ValueError(f"label name {value!r} must be lower-case letters, digits, '_'")
        return value


class Taxonomy(BaseModel):
    """The full taxonomy: a version and an ordered list of categories."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    categories: list[Category] = Field(min_length=1)

    @field_validator("categories")
    @classmethod
    def _unique_names(cls, value: list[Category]) -> list[Category]:
        seen: set[str] = set()
        for category in value:
            if category.name in seen:
                raise ValueError(f"label {category.name!r} is defined twice")
            seen.add(category.name)
        return value

    @property
    def labels(self) -> list[str]:
        """Label names in taxonomy order (the order of model outputs)."""
        return [c.name for c in self.categories]

    def category(self, label: str) -> Category:
        """Return the category for `label`, or raise TaxonomyError naming it."""
        for category in self.categories:
            if category.name == label:
                return category
        raise TaxonomyError(self._unknown_message([label], None))

    def check_labels(self, labels: Iterable[str], where: str | None = None) -> list[str]:
        """Return `labels` as a list if every one is known; else raise TaxonomyError naming them.

        Args:
            labels: label names to check.
            where: optional location (file and line) used in the error message.
        """
        labels = list(labels)
        known = set(self.labels)
        unknown = [label for label in labels if label not in known]
        if unknown:
            raise TaxonomyError(self._unknown_message(unknown, where))
        return labels

    def _unknown_message(self, unknown: list[str], where: str | None) -> str:
        names = ", ".join(repr(u) for u in unknown)
        place = f" in {where}" if where else ""
        return f"unknown label {names}{place}; taxonomy {self.version} knows: " + ", ".join(
            self.labels
        )


def parse_taxonomy(data: Any, source: str = "<taxonomy>") -> Taxonomy:
    """Validate a parsed taxonomy document.

    Args:
        data: the YAML document as Python objects.
        source: where it came from, for error messages.

    Returns:
        The validated taxonomy.
    """
    if not isinstance(data, dict):
        raise TaxonomyError(f"{source}: expected a mapping with 'version' and 'categories'")
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise TaxonomyError(f"{source}: invalid taxonomy: {problems}") from None


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Load and validate a taxonomy YAML file.

    Args:
        path: the YAML file (usually `data/taxonomy.yaml` or `<artifact>/taxonomy.yaml`).

    Returns:
        The validated taxonomy.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaxonomyError(f"cannot read taxonomy {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"{path}: not valid YAML: {exc}") from None
    return parse_taxonomy(data, str(path))
