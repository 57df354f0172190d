"""The HiggsDNA analysis JSON and its sample JSON, loaded and checked before any work starts.

Every mistake a user can make in these files ends as one DispatchError line that names the file and the
key, so nothing is processed (or written) on a half-valid configuration.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.higgsdna import registries as higgsdna
from coffea_dispatch.inputs.filesets import Fileset, dataset_entries, entry_json
from coffea_dispatch.options.values import closest, did_you_mean
from coffea_dispatch.output import LEDGER, MERGED_FOLDER

REQUIRED_KEYS = ("samplejson", "workflow")
OPTIONAL_KEYS = ("metaconditions", "taggers", "systematics", "corrections", "year", "bTagEffFileName")
# Registered metaconditions: the base workflow's own cuts. HiggsDNA's names (Era2022_v1, ...) come from
# higgs_dna.metaconditions when HiggsDNA is installed; none are bundled.
REGISTERED_METACONDITIONS: dict[str, dict[str, Any]] = {"default": {}}
FORBIDDEN_SAMPLE_CHARACTERS = ("/", "\\", "\x00", "\n", "\r")


class AnalysisWarning(UserWarning):
    """Something in the analysis JSON that is ignored but probably a typo, or that the user should know."""


def resolve_relative(value: str, json_folder: Path, what: str) -> Path:
    """A relative path from a JSON file: HiggsDNA opens it from the current folder, files written for
    coffea-dispatch sit beside their JSON. The current folder wins when the path exists there; when both
    exist and differ, a note says which one was used."""
    path = Path(os.path.expanduser(value))
    if path.is_absolute():
        return path
    here, beside = Path.cwd() / path, json_folder.absolute() / path
    if not _exists(here, value, what):
        return beside
    if _exists(beside, value, what) and not here.samefile(beside):
        warnings.warn(
            f"{what} '{value}': read {here} (the current folder, as HiggsDNA does), not {beside}",
            AnalysisWarning,
            stacklevel=2,
        )
    return here


def _exists(path: Path, value: str, what: str) -> bool:
    """A name the system cannot even look up (over 255 bytes a component, say) is the JSON's error, in one line."""
    try:
        return path.exists()
    except OSError as error:
        raise DispatchError(f"{what} '{value}': not a usable path ({error.strerror}): fix it in the JSON") from None


@dataclass
class Analysis:
    """Everything one run needs from the user's JSON files, with paths already resolved."""

    path: Path
    samplejson: Path
    samples: dict[str, list[str]]
    workflow: str
    metaconditions: dict[str, Any] = field(default_factory=dict)
    taggers: Any = None
    systematics: Any = None
    corrections: Any = None
    year: Any = None
    btag_eff_file: str | None = None  # the JSON's bTagEffFileName, passed to HiggsDNA workflows
    replicas: dict[str, list[str]] = field(default_factory=dict)  # file (its first replica) -> every replica
    entry_ranges: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # file -> only these entries
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # sample -> coffea's dataset metadata
    trees: dict[str, str] = field(default_factory=dict)  # file -> its tree, where not Events
    steps: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # file -> coffea's preprocessed chunks
    uuids: dict[str, str] = field(default_factory=dict)  # file -> the ROOT UUID its preprocessing saw
    num_entries: dict[str, int] = field(default_factory=dict)  # file -> the entries its preprocessing saw

    @classmethod
    def of_fileset(cls, path: Path, samplejson: Path, fileset: Fileset, workflow: str, **settings: Any) -> Analysis:
        inputs = {k: getattr(fileset, k) for k in ("replicas", "entry_ranges", "metadata", "trees", "steps")}
        inputs.update(uuids=fileset.uuids, num_entries=fileset.num_entries)
        return cls(path, samplejson, fileset.files, workflow, **settings, **inputs)

    def rename_files(self, rename: Callable[[str], str]) -> None:
        """Read every input under another name (dask/casa: through its XCache), with all the fileset says of it."""
        self.samples = {name: [rename(f) for f in files] for name, files in self.samples.items()}
        self.replicas = {rename(f): [rename(r) for r in rs] for f, rs in self.replicas.items()}
        for per_file in ("entry_ranges", "trees", "steps", "uuids", "num_entries"):
            setattr(self, per_file, {rename(f): value for f, value in getattr(self, per_file).items()})

    def sample_entry(self, filename: str) -> str | list[str] | dict:
        """A file as a sample JSON lists it: its replicas travel with it, and how to read it."""
        return entry_json(self, filename)

    @property
    def name(self) -> str:
        """The analysis JSON's stem, used to name batch submissions."""
        return self.path.stem

    def processor_settings(self) -> dict[str, Any]:
        """What the JSON gives a processor, under HiggsDNA's keyword names (they also decide its outputs)."""
        return {
            "metaconditions": self.metaconditions,
            "systematics": self.systematics,
            "corrections": self.corrections,
            "taggers": self.taggers,
            "year": self.year,
            "bTagEffFileName": self.btag_eff_file,
        }

    def json_content(self, samplejson: str) -> dict[str, Any]:
        """This analysis as a self-contained analysis JSON (everything resolved) reading `samplejson`: what
        a batch job or a single-file reproducer runs from."""
        return {
            "samplejson": samplejson,
            "workflow": self.workflow,
            "metaconditions": self.metaconditions,
            "taggers": self.taggers,
            "systematics": self.systematics,
            "corrections": self.corrections,
            "year": self.year,
            "bTagEffFileName": self.btag_eff_file,
        }


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file, turning every failure into a one-line message naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DispatchError(f"{path}: {what} not found (check the path)") from None
    except IsADirectoryError:
        raise DispatchError(f"{path}: {what} is a directory, expected a JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DispatchError(f"{path}: cannot read {what} ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DispatchError(
            f"{path}: {what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:
        raise DispatchError(f"{path}: {what} is nested too deeply to be a valid configuration") from None


def check_sample_name(name: Any, where: Path) -> str:
    """Sample names become folder names under --dump: refuse anything that could escape it."""
    if not isinstance(name, str) or not name.strip():
        raise DispatchError(f"{where}: sample name {name!r} must be a non-empty string")
    if name in (".", "..") or any(c in name for c in FORBIDDEN_SAMPLE_CHARACTERS):
        raise DispatchError(
            f"{where}: sample name {name!r} is not allowed as a folder name (no '/', '\\', '..', NUL or "
            "newlines): rename the sample"
        )
    if name.startswith(".") or name == MERGED_FOLDER:
        raise DispatchError(
            f"{where}: sample name {name!r} is a folder the tool keeps for itself in --dump (hidden names such as "
            f"{LEDGER}, and {MERGED_FOLDER}/ of `merge`): rename the sample"
        )
    return name


def resolve_input_path(entry: str, base: Path) -> str:
    """A relative file path: the current folder first (HiggsDNA), else the sample JSON's folder; absolute,
    because batch jobs read their copy of the sample JSON from another folder. URLs are left alone."""
    if "://" in entry:
        return entry
    return os.path.normpath(str(resolve_relative(entry, base, "file")))


def _file_entry(entry: Any, place: str, path: Path, redirector: str | None) -> list[str]:
    """One file of a sample: a path or URL, or a list of replicas of the same file (tried in order)."""
    replicas = entry if isinstance(entry, list) and entry else [entry]
    resolved = []
    for replica in replicas:
        if not isinstance(replica, str) or not replica.strip() or "\x00" in replica:
            raise DispatchError(f"{place} has an invalid file entry {entry!r}")
        if redirector and replica.startswith("/store/"):  # a logical file name: read through the redirector
            replica = f"{redirector.rstrip('/')}/{replica}"
        resolved.append(resolve_input_path(replica, path.parent))
    return resolved


def sample_json_text(samples: dict[str, list | dict]) -> str:
    """A sample JSON with one file per line, as people write them (an entry's ranges stay on its line); a
    dataset with metadata in coffea's form, `{"files": [...], "metadata": {...}}`."""
    blocks = []
    for name, value in samples.items():
        entries = value["files"] if isinstance(value, dict) else value
        files = "[\n" + ",\n".join(f"    {json.dumps(entry)}" for entry in entries) + "\n  ]"
        if isinstance(value, dict):
            rest = "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items() if k != "files")
            files = '{"files": ' + files + rest + "}"
        blocks.append(f"  {json.dumps(name)}: {files}")
    return "{\n" + ",\n".join(blocks) + "\n}\n"


def replicas_path(samplejson: Path) -> Path:
    """`samples.json` -> `samples.replicas.json`: the other replicas of the sample JSON's files (what
    `coffea-dispatch samples` writes), kept beside it so the sample JSON stays HiggsDNA's plain format."""
    return samplejson.with_name(f"{samplejson.stem}.replicas.json")


def _replicas_beside(path: Path) -> dict[str, list[str]]:
    """The replicas file beside a sample JSON ({} without one); a damaged one is one line naming it."""
    beside = replicas_path(path)
    if not beside.exists():
        return {}
    data = read_json(beside, "replicas file")
    valid = isinstance(data, dict) and all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(r, str) and r for r in v) for k, v in data.items()
    )
    if not valid:
        raise DispatchError(f'{beside}: replicas file must map a file to a list of its other replicas {{"f": ["g"]}}')
    return data


def load_samples(path: Path, redirector: str | None = None) -> Fileset:
    """Load a sample JSON: HiggsDNA's `{"<sample>": ["file1.root", ["root://siteA//f.root",
    "root://siteB//f.root"], ...]}`, or any coffea fileset form (`inputs.filesets`: metadata, tree names,
    preprocessed steps). A file given as a list of replicas is known by its first replica; a file given as
    `{"file": ..., "entries": [[start, stop], ...]}` is read over those entries only."""
    data = read_json(path, "sample JSON")
    if not isinstance(data, dict):
        raise DispatchError(f'{path}: sample JSON must be an object {{"sample": ["file.root", ...]}}')
    if not data:
        raise DispatchError(f"{path}: sample JSON lists no samples")
    fileset = Fileset()
    others = _replicas_beside(path)

    def copies(entry: Any, place: str) -> list[str]:
        if isinstance(entry, str) and entry in others:
            entry = [entry, *others[entry]]
        return _file_entry(entry, place, path, redirector)

    for name, files in data.items():
        check_sample_name(name, path)
        place = f"{path}: sample '{name}'"
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, (list, dict)) or not files:
            raise DispatchError(f"{place} must be a non-empty list of file paths")
        entries, metadata = dataset_entries(files, place, copies)
        fileset.add(name, entries, place)
        if metadata:
            fileset.metadata[name] = metadata
    return fileset


def _load_metaconditions(value: Any, base: Path, analysis_path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise DispatchError(f"{analysis_path}: 'metaconditions' must be a name, a JSON file path or an object")
    if value in REGISTERED_METACONDITIONS:
        return dict(REGISTERED_METACONDITIONS[value])
    registered = higgsdna.metaconditions(value)
    if registered is not None:
        return registered
    candidate = resolve_relative(value, base, "metaconditions")
    if value.endswith(".json") or candidate.exists():
        data = read_json(candidate, "metaconditions file")
        if not isinstance(data, dict):
            raise DispatchError(f"{candidate}: metaconditions file must hold a JSON object")
        return data
    known = ", ".join(sorted(set(REGISTERED_METACONDITIONS) | set(higgsdna.metaconditions_names())))
    hint = "" if higgsdna.available() else "; HiggsDNA's names need HiggsDNA installed in this environment"
    raise DispatchError(
        f"{analysis_path}: unknown metaconditions '{value}' (registered: {known}; or give a path to a JSON file{hint})"
    )


def _load_optional_json(value: Any, base: Path, key: str) -> Any:
    """HiggsDNA lets systematics/corrections be a path to a JSON file or inline JSON."""
    if isinstance(value, str) and value.endswith(".json"):
        return read_json(resolve_relative(value, base, key), f"{key} file")
    return value


def unknown_key_lines(data: dict[str, Any], where: Path) -> list[str]:
    """One line per key the analysis JSON has and no run reads, with the key meant when it is a misspelling.
    A misspelt key whose right spelling is absent (`metaconditon`) is refused: its setting would silently not
    be used (the default cuts instead of the user's), and the user learns it only from the plot."""
    known = (*REQUIRED_KEYS, *OPTIONAL_KEYS)
    lines = []
    for key in sorted(set(data) - set(known)):
        meant = closest(key, known)
        if meant is not None and meant not in data:
            raise DispatchError(
                f"{where}: unknown key '{key}': did you mean '{meant}'? (rename it: as written, its setting "
                "is not used)"
            )
        hint = did_you_mean(key, known)
        lines.append(f"{where}: unknown key '{key}' ignored ({hint}the keys read: {', '.join(known)})")
    return lines


def unknown_keys_of(path: str | os.PathLike) -> list[str]:
    """The unknown-key lines of the analysis JSON at `path` ([] when it cannot be read: loading it says why),
    for `--validate`, which reads no further than the inputs."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return []
    return unknown_key_lines(data, Path(path)) if isinstance(data, dict) else []


def load_analysis(path: str | os.PathLike, redirector: str | None = None) -> Analysis:
    """Load and check the analysis JSON and the sample JSON it points to; `redirector` (e.g.
    root://cms-xrd-global.cern.ch) turns bare /store/... paths into URLs."""
    analysis_path = Path(path)
    data = read_json(analysis_path, "analysis JSON")
    if not isinstance(data, dict):
        raise DispatchError(f"{analysis_path}: analysis JSON must be an object with 'samplejson' and 'workflow'")
    unknown = unknown_key_lines(data, analysis_path)  # first: `wokflow` is named as the missing `workflow`
    for key in REQUIRED_KEYS:
        if key not in data:
            raise DispatchError(f"{analysis_path}: required key '{key}' is missing")
        if not isinstance(data[key], str) or not data[key].strip():
            raise DispatchError(f"{analysis_path}: '{key}' must be a non-empty string")
    for line in unknown:
        warnings.warn(line, AnalysisWarning, stacklevel=2)
    btag_eff_file = data.get("bTagEffFileName")
    if btag_eff_file is not None and not isinstance(btag_eff_file, str):
        raise DispatchError(f"{analysis_path}: 'bTagEffFileName' must be a file name")
    base = analysis_path.parent
    samplejson = resolve_relative(data["samplejson"], base, "samplejson")
    fileset = load_samples(samplejson, redirector)
    fileset.files = higgsdna_samples(fileset.files, data, analysis_path)
    return Analysis.of_fileset(
        analysis_path,
        samplejson,
        fileset,
        data["workflow"],
        metaconditions=_load_metaconditions(data.get("metaconditions"), base, analysis_path),
        taggers=data.get("taggers"),
        systematics=_load_optional_json(data.get("systematics"), base, "systematics"),
        corrections=_load_optional_json(data.get("corrections"), base, "corrections"),
        year=data.get("year"),
        btag_eff_file=btag_eff_file,
    )


def higgsdna_samples(samples: dict[str, list[str]], data: dict[str, Any], where: Path) -> dict[str, list[str]]:
    """HiggsDNA's run_analysis.py processes only the samples its analysis JSON gives a `year` for: do the
    same for its workflows (and say which samples were left out), so both write the same files."""
    year = data.get("year")
    if not isinstance(year, dict) or ":" in data["workflow"] or not higgsdna.workflow_class(data["workflow"]):
        return samples
    dropped = [name for name in samples if name not in year]
    if dropped:
        warnings.warn(
            f"{where}: sample(s) {', '.join(dropped)} have no 'year' entry and are not processed (as in HiggsDNA)",
            AnalysisWarning,
            stacklevel=2,
        )
    kept = {name: files for name, files in samples.items() if name in year}
    if not kept:
        raise DispatchError(f"{where}: no sample of the sample JSON has a 'year' entry: nothing to process")
    return kept
