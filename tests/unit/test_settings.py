from pathlib import Path

import pytest

from resources.settings import load_settings


def test_defaults_to_the_simulated_world_under_home(tmp_path: Path) -> None:
    settings = load_settings({"RETAIL_ML_HOME": str(tmp_path)})
    assert settings.dataset.name == "simulated"
    assert settings.delta_root == tmp_path / "delta"
    assert settings.dataset.horizon_periods == 28


def test_bad_dataset_yaml_names_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfrequency: hourly\nsales: {path: '*.csv'}\n")
    with pytest.raises(ValueError, match=r"(?s)bad\.yaml.*frequency"):
        load_settings({"RETAIL_ML_HOME": str(tmp_path), "RETAIL_ML_DATASET": str(bad)})


def test_relative_paths_resolve_against_the_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg" / "d.yaml"
    cfg.parent.mkdir()
    cfg.write_text("name: x\nsales: {path: 'data/*.csv'}\n")
    settings = load_settings({"RETAIL_ML_HOME": str(tmp_path), "RETAIL_ML_DATASET": str(cfg)})
    assert settings.dataset.sales.path == str(tmp_path / "cfg" / "data" / "*.csv")


@pytest.mark.parametrize(("url", "why"), [
    ("redis://:hunter2@cache:6379/0", "RETAIL_ML_ONLINE_STORE_PASSWORD"),  # shown in the UI
    ("http://cache:6379", "expected redis://")])
def test_the_online_store_url_is_checked(tmp_path: Path, url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        load_settings({"RETAIL_ML_HOME": str(tmp_path), "RETAIL_ML_ONLINE_STORE": url})
    fine = load_settings({"RETAIL_ML_HOME": str(tmp_path),
                          "RETAIL_ML_ONLINE_STORE": "redis://cache:6379/2"})
    assert fine.online_store == "redis://cache:6379/2"
