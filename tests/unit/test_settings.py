"""Settings: one declaration read from the environment, checked into one-line errors, and README's table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from medtrinity_tasks.config import Settings, environment_names, load_settings, settings_table
from medtrinity_tasks.errors import MedtrinityError

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_settings_table() -> str:
    lines = README.read_text().splitlines()
    start = lines.index("| variable | default | meaning |")
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def test_readme_table_is_the_declaration():
    """Every variable documented with its default: regenerate with `python -m medtrinity_tasks.config`."""
    assert readme_settings_table() == settings_table()


def test_the_module_prints_the_table():
    done = subprocess.run(
        [sys.executable, "-m", "medtrinity_tasks.config"], capture_output=True, text=True, check=True, env={}
    )
    assert done.stdout.strip() == settings_table()


def test_every_field_names_its_variable_and_says_what_it_is():
    for name, field in Settings.model_fields.items():
        assert environment_names(name)[0].isupper(), name
        assert field.description, name


def test_an_explicit_environment_is_all_that_is_read(monkeypatch):
    monkeypatch.setenv("MEDTRINITY_SHARD_SIZE", "3")
    assert load_settings({}).shard_size == 16
    assert load_settings().shard_size == 3
    assert load_settings({"medtrinity_shard_size": "5"}).shard_size == 16  # names are case-sensitive


def test_defaults_and_empty_strings_mean_unset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blank = {name: "" for field in Settings.model_fields for name in environment_names(field)}
    settings = load_settings(blank)
    assert settings == load_settings({})
    assert (settings.samples_dir, settings.knowledge_dir) == (tmp_path / "data/samples", tmp_path / "data/knowledge")
    assert (settings.shard_size, settings.runner, settings.parallel_shards, settings.min_pass_rate) == (
        16,
        "ray",
        1,
        0.9,
    )
    assert (settings.ray_address, settings.deid_salt, settings.allowed_root, settings.catalog_dirs) == (None,) * 3 + (
        (),
    )


def test_values_are_parsed_as_the_pipeline_takes_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        {
            "RAY_ADDRESS": "ray://head:10001",
            "MEDTRINITY_CATALOG_DIRS": f"site{os.pathsep}{tmp_path / 'other'}{os.pathsep}",
            "MEDTRINITY_NOTIFY_EMAILS": " ops@example.org, ,data@example.org",
            "MEDTRINITY_LLM_URL": "http://llm:8000/v1/",
            "MEDTRINITY_EXPERTS": "experts.yaml",
            "MEDTRINITY_DATA_DIR": "staged",
            "MEDTRINITY_MIN_PASS_RATE": "0.75",
        }
    )
    assert settings.parallel_shards == 8  # against a Ray cluster
    assert settings.catalog_dirs == (tmp_path / "site", tmp_path / "other")
    assert settings.notify_emails == ("ops@example.org", "data@example.org")
    assert settings.llm_url == "http://llm:8000/v1"
    assert settings.experts_file == tmp_path / "experts.yaml"
    assert settings.allowed_root == tmp_path / "staged"
    assert settings.location_variables()["MEDTRINITY_DATA_DIR"] == "staged"
    assert settings.min_pass_rate == 0.75


def test_s3_data_dir_has_no_local_root_and_the_s3_endpoint_falls_back_to_aws_endpoint_url():
    settings = load_settings({"MEDTRINITY_DATA_DIR": "s3://bucket/staged", "AWS_ENDPOINT_URL": "http://minio:9000"})
    assert (settings.allowed_root, settings.s3_endpoint_url) == (None, "http://minio:9000")
    assert settings.location_variables()["MEDTRINITY_DATA_DIR"] == "s3://bucket/staged"
    both = {"MEDTRINITY_S3_ENDPOINT_URL": "http://moto:5000", "AWS_ENDPOINT_URL": "http://minio:9000"}
    assert load_settings(both).s3_endpoint_url == "http://moto:5000"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MEDTRINITY_SHARD_SIZE": "x"}, "MEDTRINITY_SHARD_SIZE must be an integer, got 'x'"),
        ({"MEDTRINITY_SHARD_SIZE": "0"}, "MEDTRINITY_SHARD_SIZE must be at least 1, got '0'"),
        ({"MEDTRINITY_LLM_QPS": "fast"}, "MEDTRINITY_LLM_QPS must be a number, got 'fast'"),
        ({"MEDTRINITY_MIN_PASS_RATE": "1.5"}, "MEDTRINITY_MIN_PASS_RATE must be at most 1, got '1.5'"),
        ({"MEDTRINITY_KNOWLEDGE_TOP_K": "-1"}, "MEDTRINITY_KNOWLEDGE_TOP_K must be at least 0, got '-1'"),
        ({"MEDTRINITY_RUNNER": "dask"}, "MEDTRINITY_RUNNER must be 'ray' or 'inprocess', got 'dask'"),
        (
            {"MEDTRINITY_PROMPT_IMAGE": "svg"},
            "MEDTRINITY_PROMPT_IMAGE must be 'draw', 'crop', 'plain' or 'none', got 'svg'",
        ),
        (
            {"MEDTRINITY_LLM_RESPONSE_FORMAT": "xml"},
            "MEDTRINITY_LLM_RESPONSE_FORMAT must be 'json_schema' or 'json_object', got 'xml'",
        ),
        (
            {"MEDTRINITY_VLLM_GPUS": "two", "MEDTRINITY_JUDGE_MIN_SCORE": "9"},
            "MEDTRINITY_VLLM_GPUS must be an integer, got 'two'; MEDTRINITY_JUDGE_MIN_SCORE must be at most 5, got '9'",
        ),
    ],
)
def test_a_bad_value_is_a_one_line_error_naming_the_variable(env, message):
    with pytest.raises(MedtrinityError) as raised:
        load_settings(env)
    assert str(raised.value) == message


def test_with_changes_derives_a_validated_copy():
    settings = load_settings({})
    changed = settings.with_changes(shard_size=4, llm_url="http://other/v1/")
    assert (changed.shard_size, changed.llm_url, settings.shard_size) == (4, "http://other/v1", 16)
    assert settings.with_changes() == settings
    with pytest.raises(MedtrinityError, match="^MEDTRINITY_RUNNER must be 'ray' or 'inprocess', got 'dask'$"):
        settings.with_changes(runner="dask")
    with pytest.raises(TypeError, match="no field shard_count"):
        settings.with_changes(shard_count=4)
    with pytest.raises(ValidationError, match="frozen"):
        settings.shard_size = 4
