"""`coffea-dispatch samples`: HiggsDNA's datasets.txt in, a sample JSON out; local folders and the real XRootD
test server listed for real, DAS through a dasgoclient stand-in the test puts on PATH (never shipped), answering
with recorded dasgoclient -json output; a run over the JSON falls back to a file's next replica."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from coffea_dispatch.cli import main
from coffea_dispatch.datasets import SamplesOptions, build_samples
from coffea_dispatch.datasets.coverage import coverage
from coffea_dispatch.inputs.analysis import load_analysis
from conftest import LOOSE_CUTS, read_rows, write_analysis
from helpers import assert_same_rows, make_proxy, run_analysis_with

DATASET = (
    "/GluGluHToGG_M125_TuneCP5_13p6TeV_amcatnloFXFX-pythia8/Run3Summer22NanoAODv12-130X_mcRun3_2022_realistic_v5-v2/"
    "NANOAODSIM"
)
PRIVATE = "/DYto2L/someone-Run3Summer22-private-v1/USER"
PLAIN = "/GluGluHToGG_M125_TuneCP5_13p6TeV-powheg/Run3Summer23NanoAODv12-130X_mcRun3_2023_v14-v2/NANOAODSIM"
DATA = "/Muon/Run2022C-22Sep2023-v1/NANOAOD"


def datasets_txt(folder: Path, text: str) -> Path:
    path = folder / "datasets.txt"
    path.write_text(textwrap.dedent(text))
    return path


def run_samples(*arguments: str) -> int:
    return main(["samples", *arguments])


# ---- local folders ------------------------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path) -> Path:
    root = tmp_path / "data"
    for path in ("a/one.root", "a/two.root", "a/notes.txt", "a/deeper/three.root", "b/four.ROOT"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"x" * 10)
    return root


def test_local_folders_globs_recursion_and_extensions(folders, tmp_path, capsys):
    listing = datasets_txt(tmp_path, f"""\
        # HiggsDNA's format: <name> <dataset or path>
        Flat    {folders}/a
        Deep    {folders}/a

        Globbed {folders}/*/*.root
        Globbed {folders}/b
    """)  # fmt: skip
    assert run_samples("-i", str(listing), "--mode", "local") == 0
    written = json.loads((tmp_path / "datasets.json").read_text())  # HiggsDNA's name: datasets.txt -> .json
    assert written["Flat"] == [str(folders / "a/one.root"), str(folders / "a/two.root")]  # sorted, .root only
    assert written["Deep"] == written["Flat"]  # not --recursive
    assert written["Globbed"] == [*written["Flat"], str(folders / "b/four.ROOT")]  # one name twice: both lists
    assert not (tmp_path / "datasets.replicas.json").exists()
    assert run_samples("-i", str(listing), "--mode", "local", "--recursive", "-o", str(tmp_path / "r.json")) == 0
    assert str(folders / "a/deeper/three.root") in json.loads((tmp_path / "r.json").read_text())["Deep"]
    every = ["-i", str(listing), "--mode", "local", "--file-extension", "-o", str(tmp_path / "all.json")]
    assert run_samples(*every) == 0
    assert str(folders / "a/notes.txt") in json.loads((tmp_path / "all.json").read_text())["Flat"]


def test_existing_json_is_kept_dry_run_writes_nothing_and_errors_are_one_line(folders, tmp_path, capsys):
    listing = datasets_txt(tmp_path, f"Flat {folders}/a\n")
    (tmp_path / "datasets.json").write_text("mine")
    assert run_samples("-i", str(listing), "--mode", "local") == 2
    assert "datasets.json: exists; use --overwrite" in capsys.readouterr().err
    assert (tmp_path / "datasets.json").read_text() == "mine"
    assert run_samples("-i", str(listing), "--mode", "local", "--dry-run") == 0
    assert "--dry-run: nothing written" in capsys.readouterr().out
    assert (tmp_path / "datasets.json").read_text() == "mine"
    assert run_samples("-i", str(listing), "--mode", "local", "--overwrite") == 0
    assert json.loads((tmp_path / "datasets.json").read_text())["Flat"]
    missing = datasets_txt(tmp_path, f"Flat {folders}/a\nGone {folders}/nowhere\n")
    assert run_samples("-i", str(missing), "--mode", "local", "--dry-run") == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {missing}:2 (Gone): {folders}/nowhere: no such folder or file (a local dataset must be a " \
        "folder, a file or a glob)"  # fmt: skip
    bad = datasets_txt(tmp_path, "JustAName\n")
    assert run_samples("-i", str(bad), "--dry-run") == 2
    assert f"{bad}:1: expected '<sample name> <dataset or path>'" in capsys.readouterr().err


# ---- XRootD folders, on the real test server ------------------------------------------------------------------------


@pytest.fixture
def served_folders(xrootd, generated):
    """Folders on the test server: listing/{a,a/deeper}; private/ that the server (run as nobody) cannot list."""
    root = xrootd.data / "listing"
    for path, source in (("a/s.root", generated["Signal"][0]), ("a/deeper/b.root", generated["Background"][0])):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / path)
    for folder in [root, *root.rglob("*")]:
        folder.chmod(0o755 if folder.is_dir() else 0o644)
    private = xrootd.data / "private"
    private.mkdir(exist_ok=True)
    private.chmod(0o700)  # root's: nobody may not enter it
    yield f"{xrootd.redirector}//store/data"
    shutil.rmtree(root)
    shutil.rmtree(private)


def test_xrootd_folders_recursion_globs_and_errors(served_folders, generated, tmp_path, capsys):
    base = served_folders
    listing = datasets_txt(tmp_path, f"Flat {base}/listing/a/\nGlob {base}/listing/a/*.root\n")
    result = build_samples(listing, dry_run=True)
    assert result.samples == {"Flat": [f"{base}/listing/a/s.root"], "Glob": [f"{base}/listing/a/s.root"]}
    assert result.listed[0].size == os.path.getsize(generated["Signal"][0])  # the server's stat
    deep = build_samples(listing, dry_run=True, options=SamplesOptions(recursive=True))
    assert deep.samples["Flat"] == [f"{base}/listing/a/deeper/b.root", f"{base}/listing/a/s.root"]
    for folder, said in ((f"{base}/listing/nowhere/", "no such file or directory"), (f"{base}/private/", "ermission")):
        broken = datasets_txt(tmp_path, f"Broken {folder}\n")
        assert run_samples("-i", str(broken), "--dry-run") == 2
        err = " ".join(capsys.readouterr().err.split())
        assert err.startswith(f"error: {broken}:1 (Broken): root://") and "cannot be listed" in err and said in err, err


# ---- DAS, through a dasgoclient stand-in ---------------------------------------------------------------------------


def das_file(name: str, size: int, events: int) -> dict:
    return {"das": {"primary_key": "file.name"}, "file": [{"name": name, "size": size, "nevents": events}]}


DAS_ANSWERS = {  # what dasgoclient -json answers (recorded shape: records of "dataset" or "file" lists)
    "dataset=/GluGluHToGG*/Run3Summer22NanoAODv12*/NANOAODSIM instance=prod/global": [
        {"das": {"instance": "prod/global", "primary_key": "dataset.name"}, "dataset": [{"name": DATASET}]}
    ],
    f"file dataset={DATASET} instance=prod/global": [
        das_file("/store/data/Signal_0.root", 1000, 50000),
    ],
    f"file dataset={PRIVATE} instance=prod/phys03": [
        das_file("/store/data/Background_0.root", 2000, 40000),
        das_file("/store/data/Background_1.root", 3000, 30000),
    ],
    f"file dataset={DATA} instance=prod/global": [
        das_file("/store/data/Run2022C/Muon_0.root", 4000, 1000),
        das_file("/store/data/Run2022C/Muon_1.root", 5000, 2000),
    ],
    # dasgoclient's plain answer (one name per line, no JSON): what it prints without -json, and some builds with it
    "dataset=/GluGluHToGG_M125*/Run3Summer23*/NANOAODSIM instance=prod/global": PLAIN + "\n",
    f"file dataset={PLAIN} instance=prod/global": "/store/data/Plain_0.root\n/store/data/Plain_1.root\n",
}  # fmt: skip


@pytest.fixture
def dasgoclient(tmp_path, monkeypatch) -> Path:
    """A dasgoclient on PATH for this test only: answers the recorded queries, logs what it was asked."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "answers.json").write_text(json.dumps(DAS_ANSWERS))
    script = folder / "dasgoclient"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        query = next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("-query="))
        with open({str(folder / "asked.log")!r}, "a") as log:
            log.write(query + "\\n")
        answers = json.load(open({str(folder / "answers.json")!r}))
        if query not in answers:
            sys.stderr.write("DAS error: no such dataset\\n")
            sys.exit(1)
        answer = answers[query]  # a string: a plain answer, one name per line, as dasgoclient prints without -json
        print(answer if isinstance(answer, str) else json.dumps(answer))
    """))  # fmt: skip
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("X509_USER_PROXY", str(make_proxy(tmp_path, days=2)))
    return folder


def test_das_wildcards_private_instance_prefixes_and_replicas(dasgoclient, tmp_path, capsys):
    listing = datasets_txt(tmp_path, f"""\
        GluGluHToGG /GluGluHToGG*/Run3Summer22NanoAODv12*/NANOAODSIM
        DYto2L      {PRIVATE}
    """)  # fmt: skip
    assert run_samples("-i", str(listing), "--where", "Eurasia") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "GluGluHToGG" in out and "50,000" in out and "70,000" in out  # events as DBS says them
    samples = json.loads((tmp_path / "datasets.json").read_text())
    assert samples == {
        "GluGluHToGG": ["root://xrootd-cms.infn.it//store/data/Signal_0.root"],
        "DYto2L": [f"root://xrootd-cms.infn.it//store/data/Background_{i}.root" for i in (0, 1)],
    }
    replicas = json.loads((tmp_path / "datasets.replicas.json").read_text())
    assert replicas["root://xrootd-cms.infn.it//store/data/Signal_0.root"] == [
        "root://cms-xrd-global.cern.ch//store/data/Signal_0.root"
    ]
    asked = (dasgoclient / "asked.log").read_text().splitlines()
    assert f"file dataset={PRIVATE} instance=prod/phys03" in asked  # /USER: the private instance, as HiggsDNA
    # the run reads the replicas file beside the sample JSON: every file has its fallback
    analysis = write_analysis(tmp_path / "run", {})
    content = json.loads(analysis.read_text())
    content["samplejson"] = str(tmp_path / "datasets.json")
    analysis.write_text(json.dumps(content))
    loaded = load_analysis(analysis)
    assert loaded.replicas["root://xrootd-cms.infn.it//store/data/Signal_0.root"][1].startswith("root://cms-xrd-global")


def test_das_without_proxy_or_with_a_failing_query_is_one_line(dasgoclient, tmp_path, monkeypatch, capsys):
    listing = datasets_txt(tmp_path, "Nothing /NoSuch/Dataset-v1/NANOAODSIM\n")
    assert run_samples("-i", str(listing), "--retries", "1") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(f"error: {listing}:1 (Nothing): DAS query 'file dataset=/NoSuch/Dataset-v1/NANOAODSIM")
    assert "(DAS error: no such dataset)" in err
    assert (dasgoclient / "asked.log").read_text().count("NoSuch") == 2  # retried once
    monkeypatch.setattr("coffea_dispatch.datasets.build.find_proxy", lambda voms: None)  # nowhere to be found
    assert run_samples("-i", str(listing)) == 2
    assert "DAS queries need a grid proxy and none was found: run voms-proxy-init" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_falls_back_to_the_next_replica_when_the_first_fails(dasgoclient, xrootd, generated, tmp_path):
    """The sample JSON from DAS reads through a server that is down (--xrootd), the live one next (--fallback):
    the run reads every file from its second replica, with the rows of a clean run over local files."""
    listing = datasets_txt(tmp_path, f"Signal /GluGluHToGG*/Run3Summer22NanoAODv12*/NANOAODSIM\nBackground {PRIVATE}\n")
    from xrootd_server import free_port

    dead = f"root://localhost:{free_port()}/"
    assert run_samples("-i", str(listing), "--xrootd", dead, "--fallback", f"{xrootd.redirector}/") == 0
    analysis = write_analysis(tmp_path / "run", {}, metaconditions={"preselection": LOOSE_CUTS})
    content = json.loads(analysis.read_text())
    content["samplejson"] = str(tmp_path / "datasets.json")
    analysis.write_text(json.dumps(content))
    result = run_analysis_with(analysis, tmp_path / "out", "iterative", chunk=20_000, timeout=5, retries=0)
    assert all(s.served for s in result.samples.values())  # every file read from its next replica
    reference = write_analysis(tmp_path / "ref", generated, metaconditions={"preselection": LOOSE_CUTS})
    run_analysis_with(reference, tmp_path / "clean", "iterative", chunk=20_000)
    for sample in generated:
        assert_same_rows(read_rows(tmp_path / "out", sample), read_rows(tmp_path / "clean", sample))


# ---- DBS's REST API (no dasgoclient), answered by a local server with recorded answers --------------------------

DBS_ANSWERS = {  # path -> dataset parameter -> what DBS's reader answers (recorded shape, detail=True for files)
    "/dbs/prod/global/DBSReader/datasets": {
        "/GluGluHToGG*/Run3Summer22NanoAODv12*/NANOAODSIM": [{"dataset": DATASET}],
    },
    "/dbs/prod/global/DBSReader/files": {
        DATASET: [
            {"logical_file_name": "/store/data/Signal_0.root", "file_size": 1000, "event_count": 50000,
             "is_file_valid": 1, "block_name": DATASET + "#abc", "dataset": DATASET, "file_type": "EDM"},
        ],
    },
}  # fmt: skip


@pytest.fixture
def dbs_reader():
    """An HTTP server answering DBS reader requests from DBS_ANSWERS; records every request's query."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    asked = []

    class Reader(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            asked.append((parts.path, query))
            answer = DBS_ANSWERS.get(parts.path, {}).get(query.get("dataset"))
            body = json.dumps(answer if answer is not None else [])
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Reader)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.asked = asked
    server.url = f"http://127.0.0.1:{server.server_address[1]}/dbs/prod/global/DBSReader"
    yield server
    server.shutdown()


def test_without_dasgoclient_dbs_rest_api_answers(dbs_reader, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("coffea_dispatch.datasets.build.find_dasgoclient", lambda: None)  # as off CMS machines
    monkeypatch.setenv("X509_USER_PROXY", str(make_proxy(tmp_path, days=2)))
    listing = datasets_txt(tmp_path, "GluGluHToGG /GluGluHToGG*/Run3Summer22NanoAODv12*/NANOAODSIM\n")
    monkeypatch.delenv("X509_CERT_DIR", raising=False)
    if not os.path.exists("/etc/grid-security/certificates"):  # the grid's CA folder is needed: said in one line
        assert run_samples("-i", str(listing), "--dbs-url", dbs_reader.url) == 2
        assert "X509_CERT_DIR, or /etc/grid-security/certificates" in capsys.readouterr().err
    (tmp_path / "certificates").mkdir()
    monkeypatch.setenv("X509_CERT_DIR", str(tmp_path / "certificates"))
    assert run_samples("-i", str(listing), "--dbs-url", dbs_reader.url, "-x", "root://eosuser.cern.ch/") == 0
    assert json.loads((tmp_path / "datasets.json").read_text()) == {
        "GluGluHToGG": ["root://eosuser.cern.ch//store/data/Signal_0.root"]
    }
    assert "50,000" in capsys.readouterr().out  # events as DBS says them
    files_query = next(query for path, query in dbs_reader.asked if path.endswith("/files"))
    assert files_query["dataset"] == DATASET and files_query["validFileOnly"] == "1"
    nothing = datasets_txt(tmp_path, "Nothing /NoSuch/Dataset-v1/NANOAODSIM\n")
    assert run_samples("-i", str(nothing), "--dbs-url", dbs_reader.url, "--dry-run") == 2
    assert "DBS: dataset /NoSuch/Dataset-v1/NANOAODSIM has no valid files" in capsys.readouterr().err


# ---- rucio, through rucio-clients against a local server answering with recorded REST answers ----------------------
# (rucio's own server, PyPI `rucio`, needs a database, a web server and its bootstrap: more than the minute of CI
# time the issue allows, so its REST API is stood in for: /auth/userpass, then /replicas/list as a JSON stream)

RUCIO_DID = "cms:" + DATASET


def rucio_replica(name: str, size: int, pfns: dict, volatile: tuple = (), states: dict | None = None) -> dict:
    """One file of /replicas/list (recorded shape): its pfns with their site (rse), type, priority and whether
    the site is a cache (volatile), and each site's replica state (AVAILABLE unless `states` says otherwise)."""
    rses = {}
    for pfn, (rse, _, _) in pfns.items():
        rses.setdefault(rse, []).append(pfn)
    return {
        "scope": "cms", "name": name, "bytes": size, "adler32": "01234567", "rses": rses,
        "states": {rse: (states or {}).get(rse, "AVAILABLE") for rse in rses},
        "pfns": {pfn: {"rse": rse, "type": kind, "priority": priority, "domain": "wan", "volatile": rse in volatile}
                 for pfn, (rse, kind, priority) in pfns.items()},
    }  # fmt: skip


@pytest.fixture
def rucio_server(tmp_path, monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answers = [
        rucio_replica("/store/data/Signal_0.root", 1000, {
            "root://t1.example//store/data/Signal_0.root": ("T1_US_FNAL_Disk", "DISK", 2),
            "root://t2.example//store/data/Signal_0.root": ("T2_CH_CERN", "DISK", 1),
            "root://tape.example//store/data/Signal_0.root": ("T1_IT_CNAF_Tape", "TAPE", 0),
        }),
        rucio_replica("/store/data/Signal_1.root", 2000, {
            "root://t2.example//store/data/Signal_1.root": ("T2_CH_CERN", "DISK", 1),
            "root://tape.example//store/data/Signal_1.root": ("T1_IT_CNAF_Tape", "TAPE", 0),
        }),
    ]  # fmt: skip
    asked = []

    class Rucio(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            asked.append(("GET", self.path))
            self.send_response(200)
            self.send_header("X-Rucio-Auth-Token", "test-token")
            self.send_header("X-Rucio-Auth-Token-Expires", "Wed, 31 Dec 2099 00:00:00 UTC")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            asked.append(("POST", self.path, body))
            stream = "".join(json.dumps(a) + "\n" for a in answers).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-json-stream")
            self.send_header("Content-Length", str(len(stream)))
            self.end_headers()
            self.wfile.write(stream)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Rucio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    config = tmp_path / "rucio.cfg"
    config.write_text(textwrap.dedent(f"""\
        [client]
        rucio_host = {url}
        auth_host = {url}
        auth_type = userpass
        username = tester
        password = secret
        account = tester
        request_retries = 1
    """))  # fmt: skip
    monkeypatch.setenv("RUCIO_CONFIG", str(config))
    monkeypatch.setenv("RUCIO_HOME", str(tmp_path))
    monkeypatch.setenv("X509_USER_PROXY", str(make_proxy(tmp_path, days=2)))
    rucio_config = pytest.importorskip("rucio.common.config")
    rucio_config.get_config.cache_clear()  # rucio reads its configuration once per process: this test's server
    server.asked = asked
    server.answers = answers  # a test may replace the recorded answer (in place)
    yield server
    server.shutdown()
    rucio_config.get_config.cache_clear()


def test_rucio_replicas_sorted_by_site_preference_never_tape(rucio_server, tmp_path, capsys):
    listing = datasets_txt(tmp_path, f"GluGluHToGG {RUCIO_DID}\n")
    assert run_samples("-i", str(listing), "--prefer-sites", "T1_US_FNAL_Disk") == 0
    samples = json.loads((tmp_path / "datasets.json").read_text())
    replicas = json.loads((tmp_path / "datasets.replicas.json").read_text())
    assert samples == {"GluGluHToGG": ["root://t1.example//store/data/Signal_0.root",
                                       "root://t2.example//store/data/Signal_1.root"]}  # fmt: skip
    assert replicas == {"root://t1.example//store/data/Signal_0.root": ["root://t2.example//store/data/Signal_0.root"]}
    (posted,) = [a for a in rucio_server.asked if a[0] == "POST"]
    assert posted[1] == "/replicas/list" and posted[2]["dids"] == [{"scope": "cms", "name": DATASET}]
    # blocking the only disk site of Signal_1: one line naming the file and where it is
    blocked = ["-i", str(listing), "--block-sites", "T2_CH_CERN", "--dry-run"]
    assert run_samples(*blocked) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "rucio: /store/data/Signal_1.root has no usable disk replica at an allowed site (held at: " \
        "T1_IT_CNAF_Tape (tape), T2_CH_CERN (not allowed)); change --allow-sites" in err  # fmt: skip
    assert run_samples("-i", str(listing), "--sites-regex", "^T2_", "--dry-run") == 0  # T2 only: both at CERN


def test_count_events_describes_files_once_and_keeps_them_in_the_metadata_cache(generated, tmp_path, capsys):
    folder = Path(generated["Background"][0]).parent
    listing = datasets_txt(tmp_path, f"Background {folder}/Background_*.root\n")
    cache = tmp_path / "cache"
    options = SamplesOptions(count_events=True, metadata_cache=str(cache), mode="local")
    result = build_samples(listing, dry_run=True, options=options)
    assert result.listed[0].events == 70_000  # 40,000 + 30,000, read from the files
    assert len(list(cache.glob("files/*/*.json"))) == 2  # described once: the first run reads none of them again
    again = build_samples(listing, dry_run=True, options=options)
    assert again.listed[0].events == 70_000
    assert build_samples(listing, dry_run=True, options=SamplesOptions(mode="local")).listed[0].events is None


def test_an_expired_proxy_is_one_line_before_any_query(dasgoclient, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("coffea_dispatch.datasets.build.seconds_left", lambda proxy: -60)  # expired a minute ago
    listing = datasets_txt(tmp_path, f"DYto2L {PRIVATE}\n")
    assert run_samples("-i", str(listing)) == 2
    assert "has expired: renew it with voms-proxy-init -voms cms" in capsys.readouterr().err
    assert not (dasgoclient / "asked.log").exists()  # nothing was asked


# ---- replicas no job can read, a fallback redirector, per-site coverage ------------------------------------------


def test_rucio_skips_tape_volatile_and_unavailable_replicas_and_falls_back(rucio_server, tmp_path, capsys):
    """Before: the volatile (cache) replica was chosen first, an unavailable one was kept, and a file no allowed
    site holds failed the whole list."""
    rucio_server.answers[:] = [
        rucio_replica("/store/data/Signal_0.root", 1000, {
            "root://cache.example//store/data/Signal_0.root": ("T1_US_FNAL_Disk", "DISK", 0),
            "root://cern.example//store/data/Signal_0.root": ("T2_CH_CERN", "DISK", 1),
            "root://desy.example//store/data/Signal_0.root": ("T2_DE_DESY", "DISK", 2),
        }, volatile=("T1_US_FNAL_Disk",), states={"T2_CH_CERN": "UNAVAILABLE"}),
        rucio_replica("/store/data/Signal_1.root", 2000, {
            "root://tape.example//store/data/Signal_1.root": ("T1_IT_CNAF_Tape", "TAPE", 0),
            "root://cern.example//store/data/Signal_1.root": ("T2_CH_CERN", "DISK", 1),
        }, volatile=("T2_CH_CERN",)),
        rucio_replica("/store/data/Signal_2.root", 3000, {
            "root://cern.example//store/data/Signal_2.root": ("T2_CH_CERN", "DISK", 1),
        }, states={"T2_CH_CERN": "COPYING"}),
    ]  # fmt: skip
    listing = datasets_txt(tmp_path, f"GluGluHToGG {RUCIO_DID}\n")
    assert run_samples("-i", str(listing), "--dry-run") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "rucio: /store/data/Signal_1.root has no usable disk replica at an allowed site (held at: T1_IT_CNAF_Tape " \
        "(tape), T2_CH_CERN (volatile)) (and 1 other file); change --allow-sites, --block-sites or --sites-regex, or " \
        "give --fallback-redirector URL" in err, err  # fmt: skip
    redirector = "root://cms-xrd-global.cern.ch/"
    assert run_samples("-i", str(listing), "--fallback-redirector", redirector, "--sites-table") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert json.loads((tmp_path / "datasets.json").read_text()) == {"GluGluHToGG": [
        "root://desy.example//store/data/Signal_0.root",  # neither the cache's nor the unavailable one
        "root://cms-xrd-global.cern.ch//store/data/Signal_1.root",
        "root://cms-xrd-global.cern.ch//store/data/Signal_2.root",
    ]}  # fmt: skip
    assert not (tmp_path / "datasets.replicas.json").exists()  # no other usable replica of any file
    assert (
        f"note: {listing}:1 (GluGluHToGG): 2 of 3 files are held at no allowed site: read through {redirector}" in out
    )
    assert "sites: files held per dataset" in out and "T2_DE_DESY │ 1 / 3 │ 33% │ 1" in out, out
    assert "T2_CH_CERN │" not in out  # holds three files, none of them usable
    options = SamplesOptions(fallback_redirector=redirector)
    rows = coverage(build_samples(listing, dry_run=True, options=options).listed)
    assert [(r.site, r.held, r.files, r.chosen) for r in rows] == [
        (f"fallback {redirector}", 2, 3, 2),
        ("T2_DE_DESY", 1, 3, 1),
    ]


def test_sites_table_counts_every_usable_replica(rucio_server, tmp_path, capsys):
    listing = datasets_txt(tmp_path, f"GluGluHToGG {RUCIO_DID}\n")
    assert run_samples("-i", str(listing), "--sites-table", "--dry-run") == 0
    out = " ".join(capsys.readouterr().out.split())
    # T2_CH_CERN holds both files (read from it: rucio's priority 1), T1_US_FNAL_Disk one; the tape site none
    assert "T2_CH_CERN │ 2 / 2 │ 100% │ 2" in out and "T1_US_FNAL_Disk │ 1 / 2 │ 50% │ 0" in out, out
    assert "T1_IT_CNAF_Tape" not in out


# ---- every failing line at once, a line listed twice, dasgoclient's plain answer ----------------------------------


def test_every_failing_line_is_named_at_once(folders, tmp_path, capsys):
    """Before: only the first failing line was named; fixing it revealed the next, one run at a time."""
    listing = datasets_txt(tmp_path, f"Gone {folders}/nowhere\nFlat {folders}/a\nAlsoGone {folders}/elsewhere\n")
    assert run_samples("-i", str(listing), "--mode", "local", "--dry-run") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"error: {listing}:1 (Gone): {folders}/nowhere: no such folder or file (a local dataset must be a folder, a "
        "file or a glob)",
        f"{listing}:3 (AlsoGone): {folders}/elsewhere: no such folder or file (a local dataset must be a folder, a "
        "file or a glob)",
    ]


def test_a_dataset_listed_twice_under_one_name_is_asked_once_and_noted(dasgoclient, tmp_path, capsys):
    """Before: asked twice, and its events counted twice in the table (70,000 on each of two rows)."""
    listing = datasets_txt(tmp_path, f"DYto2L {PRIVATE}\nDYto2L {PRIVATE}\n")
    assert run_samples("-i", str(listing), "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"note: {listing}:2 (DYto2L): {PRIVATE} is listed already ({listing}:1): asked once" in out
    assert out.count("70,000") == 1, out  # one row
    assert (dasgoclient / "asked.log").read_text().splitlines().count(
        f"file dataset={PRIVATE} instance=prod/phys03"
    ) == 1


def test_dasgoclients_plain_answer_is_read(dasgoclient, tmp_path, capsys):
    """Before: 'DAS query ... failed (not JSON: ...)'."""
    listing = datasets_txt(tmp_path, "Plain /GluGluHToGG_M125*/Run3Summer23*/NANOAODSIM\n")
    assert run_samples("-i", str(listing), "-o", str(tmp_path / "plain.json")) == 0
    files = [f"root://cmsxrootd.fnal.gov//store/data/Plain_{i}.root" for i in (0, 1)]
    assert json.loads((tmp_path / "plain.json").read_text()) == {"Plain": files}
    assert run_samples("-i", str(listing), "--format", "coffea") == 0
    written = json.loads((tmp_path / "datasets.json").read_text())
    assert list(written["Plain"]["files"]) == [f"root://cmsxrootd.fnal.gov//store/data/Plain_{i}.root" for i in (0, 1)]
    assert written["Plain"]["metadata"]["das_names"] == [PLAIN] and written["Plain"]["metadata"]["year"] == "2023"
    assert "nevents" not in written["Plain"]["metadata"]  # a plain answer says no events: none made up
    (dasgoclient / "answers.json").write_text(json.dumps({**DAS_ANSWERS, f"file dataset={PLAIN} instance=prod/global":
                                                          "DAS is down for maintenance\n"}))  # fmt: skip
    assert run_samples("-i", str(listing), "--dry-run", "--retries", "0") == 2
    assert "neither JSON nor one name per line: 'DAS is down for maintenance'" in capsys.readouterr().err
