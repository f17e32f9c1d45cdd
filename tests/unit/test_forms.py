"""The forms the Prefect UI shows for the served deployments (built here, no server needed)."""

from deployments.serve import build_deployments
from tasks.settings import load_settings


def directory_field(settings, name: str) -> dict:
    (served,) = [d for d in build_deployments(settings) if d.name == name]
    return served._parameter_openapi_schema.properties["directory"]


def test_only_registered_code_bases_are_offered_as_choices(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    settings = load_settings(codebases=[a, b], data_dir=tmp_path / "data")
    for name in ("index", "force-reindex"):
        assert directory_field(settings, name)["enum"] == [str(a), str(b)]


def test_with_allowed_roots_a_typed_path_stays_possible(tmp_path):
    settings = load_settings(codebases=[tmp_path / "a"], allowed_roots=[tmp_path], data_dir=tmp_path / "data")
    field = directory_field(settings, "index")
    assert "enum" not in field and field["type"] == "string" and "RCI_ALLOWED_ROOTS" in field["description"]
