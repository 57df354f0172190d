"""Property-based tests: whatever the analysis and sample JSON files hold, the loaders either accept them or
raise the tool's one-line DispatchError, never another exception; an accepted sample name can never lead
out of the output folder."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.analysis import load_analysis
from coffea_dispatch.output import chunk_output_path

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=20,
)
# names an attacker (or a typo) could give a sample: path pieces, shell characters, control characters, unicode
hostile_names = st.one_of(
    st.text(),
    st.sampled_from(["..", ".", "/", "a/b", "../x", "x/..", "\x00", "a\nb", "$(touch X)", "`id`", ";rm -rf ~", " "]),
    st.text(alphabet=st.sampled_from("./\\\x00\n$`;'\" ab"), max_size=8),
)
file_entries = st.one_of(st.text(), st.integers(), st.none(), st.sampled_from(["a.root", "/x/y.root", "root://h//f"]))


def load(analysis_content, samples_content) -> object:
    """Write both files (as JSON when they are values, as they are when bytes) and load the analysis."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for name, content in (("analysis.json", analysis_content), ("samples.json", samples_content)):
            data = content if isinstance(content, bytes) else json.dumps(content).encode()
            (root / name).write_bytes(data)
        try:
            return load_analysis(root / "analysis.json")
        except DispatchError as error:
            assert "\n" not in error.message.strip() or "\n" in repr(samples_content) + repr(analysis_content)
            return error


@pytest.mark.slow
@SETTINGS
@given(json_values)
def test_any_analysis_json_value_is_loaded_or_refused_clearly(content):
    load(content, {"S": ["a.root"]})


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_as_analysis_json_are_refused_clearly(content):
    assert isinstance(load(content, {"S": ["a.root"]}), DispatchError)


@pytest.mark.slow
@SETTINGS
@given(json_values)
def test_any_sample_json_value_is_loaded_or_refused_clearly(content):
    load({"samplejson": "samples.json", "workflow": "base"}, content)


@pytest.mark.slow
@SETTINGS
@given(st.dictionaries(hostile_names, st.lists(file_entries, max_size=4) | file_entries, max_size=4))
def test_accepted_sample_names_stay_inside_the_output_folder(samples):
    loaded = load({"samplejson": "samples.json", "workflow": "base"}, samples)
    if isinstance(loaded, DispatchError):
        return
    dump = Path("/dump")
    for name, files in loaded.samples.items():
        assert "\x00" not in name and "\n" not in name and "/" not in name
        for filename in files:
            target = Path(os.path.normpath(chunk_output_path(dump, name, filename, 0, 10)))
            assert target.parent.parent.parent == dump, (name, target)


@pytest.mark.slow
@settings(max_examples=8, deadline=None)
@given(st.integers(min_value=0, max_value=100_000))
def test_huge_sample_lists_load(n_files):
    loaded = load(
        {"samplejson": "samples.json", "workflow": "base"}, {"S": [f"/data/f{i}.root" for i in range(n_files)]}
    )
    if n_files == 0:
        assert isinstance(loaded, DispatchError)
    else:
        assert len(loaded.samples["S"]) == n_files


def test_a_file_name_too_long_to_look_up_is_one_line():
    """Found by the hypothesis test above: a 300-byte file name made Path.exists() raise ENAMETOOLONG."""
    refused = load({"samplejson": "samples.json", "workflow": "base"}, {"S": ["0" * 300 + ".root"]})
    assert isinstance(refused, DispatchError) and "not a usable path (File name too long)" in refused.message
