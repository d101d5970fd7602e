from pathlib import Path

import pytest
import yaml

from serving.contract.errors import TaxonomyError
from serving.contract.taxonomy import load_taxonomy, parse_taxonomy

LABELS = [
    "uav",
    "navigation_avionics",
    "electronics",
    "telecom_infosec",
    "sensors_lasers",
    "materials_chemicals",
    "materials_processing",
    "marine",
    "aerospace_propulsion",
]


def test_project_taxonomy_has_the_nine_labels_in_order(taxonomy):
    assert taxonomy.labels == LABELS
    assert taxonomy.version
    for category in taxonomy.categories:
        assert category.control_refs and category.product_types and category.hard_negatives
        assert len(category.definition) > 40


def test_unknown_label_error_names_it(taxonomy):
    with pytest.raises(TaxonomyError, match=r"unknown label 'drones' in corpus.jsonl:7"):
        taxonomy.check_labels(["uav", "drones"], where="corpus.jsonl:7")


def test_category_lookup(taxonomy):
    assert "9A012" in taxonomy.category("uav").control_refs
    with pytest.raises(TaxonomyError, match="'lasers'"):
        taxonomy.category("lasers")


def _doc(root: Path) -> dict:
    return yaml.safe_load((root / "data" / "taxonomy.yaml").read_text())


def test_duplicate_label_rejected(root):
    doc = _doc(root)
    doc["categories"].append(dict(doc["categories"][0]))
    with pytest.raises(TaxonomyError, match="'uav' is defined twice"):
        parse_taxonomy(doc)


@pytest.mark.parametrize("field", ["version", "categories"])
def test_missing_top_level_field(root, field):
    doc = _doc(root)
    del doc[field]
    with pytest.raises(TaxonomyError, match=field):
        parse_taxonomy(doc)


def test_missing_category_field_and_bad_name(root):
    doc = _doc(root)
    del doc["categories"][2]["control_refs"]
    with pytest.raises(TaxonomyError, match=r"categories.2.control_refs"):
        parse_taxonomy(doc)
    doc = _doc(root)
    doc["categories"][0]["name"] = "UAV Systems"
    with pytest.raises(TaxonomyError, match="lower-case"):
        parse_taxonomy(doc)


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(TaxonomyError, match="cannot read"):
        load_taxonomy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [unclosed")
    with pytest.raises(TaxonomyError, match="not valid YAML"):
        load_taxonomy(bad)
    bad.write_text("- a list\n")
    with pytest.raises(TaxonomyError, match="expected a mapping"):
        load_taxonomy(bad)
