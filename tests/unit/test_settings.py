from pathlib import Path

import pytest

from tasks import settings as settings_module
from tasks.settings import CodebaseLayout, SettingsError, available_profiles, codebase_id_for, load_settings


@pytest.fixture()
def profiles(tmp_path, monkeypatch):
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "small.toml").write_text('embed_batch_tokens = 512\nmax_file_bytes = 1000\n[prefect]\nPREFECT_API_URL = "http://x/api"\n')
    (folder / "broken.toml").write_text("embed_batch_tokens = [\n")
    monkeypatch.setattr(settings_module, "PROFILES_DIR", folder)
    return folder


def test_defaults_use_the_users_data_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("RCI_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    settings = load_settings()
    assert settings.data_dir == tmp_path / "xdg" / "rust-code-index"
    assert settings.qdrant_url is None and settings.max_chunk_tokens == 256 and settings.indexing_mode == "auto"


def test_profile_then_environment_then_arguments(profiles, monkeypatch):
    monkeypatch.setenv("RCI_PROFILE", "small")
    settings = load_settings()
    assert (settings.profile, settings.embed_batch_tokens, settings.max_file_bytes) == ("small", 512, 1000)
    assert settings.prefect == {"PREFECT_API_URL": "http://x/api"}
    monkeypatch.setenv("RCI_EMBED_BATCH_TOKENS", "2048")
    assert load_settings().embed_batch_tokens == 2048  # the environment beats the profile
    assert load_settings(embed_batch_tokens=256).embed_batch_tokens == 256  # arguments beat both


def test_unknown_or_broken_profile_is_a_clear_error(profiles, monkeypatch):
    monkeypatch.setenv("RCI_PROFILE", "nope")
    with pytest.raises(SettingsError, match=r"unknown profile 'nope' \(RCI_PROFILE\); available: broken, small"):
        load_settings()
    monkeypatch.setenv("RCI_PROFILE", "broken")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings()


def test_invalid_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("RCI_EMBED_BATCH_TOKENS", "zero")
    with pytest.raises(SettingsError, match="RCI_EMBED_BATCH_TOKENS"):
        load_settings()


def test_shipped_profiles_load(monkeypatch):
    assert {"laptop", "ci"} <= set(available_profiles())
    for name in available_profiles():
        monkeypatch.setenv("RCI_PROFILE", name)
        assert load_settings().profile == name


def test_layout_is_one_folder_per_canonical_path(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data")
    (tmp_path / "My Crate").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "My Crate")
    direct = CodebaseLayout.for_root(tmp_path / "My Crate", settings)
    via_link = CodebaseLayout.for_root(tmp_path / "link" / ".", settings)
    assert direct == via_link
    assert direct.codebase_id.startswith("my-crate-") and direct.collection == direct.codebase_id
    assert direct.data_dir == (tmp_path / "data" / direct.codebase_id).resolve()
    assert {direct.tantivy_dir.parent, direct.edge_dir.parent, direct.snapshot_path.parent} == {direct.data_dir}
    assert codebase_id_for(Path("/a/x")) != codebase_id_for(Path("/b/x"))
