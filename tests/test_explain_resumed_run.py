"""A resumed run, end to end: what it took from the dump and what it processed now (needs pipeline/run.py to
hand the resumed chunks to the result: `run.resumed = resumed_summaries(executed.resumed)`)."""

from __future__ import annotations

from coffea_dispatch.cli import main


def test_a_resumed_run_says_what_it_took_from_the_dump_and_what_it_processed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "demo", "--events", "3000", "--executor", "iterative"]) == 0
    capsys.readouterr()
    command = ["run", "--json-analysis", "demo/analysis.json", "--dump", "demo/output", "--chunk", "100000"]
    assert main([*command, "--executor", "iterative", "--no-progress"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "resumed: 3 chunk(s), 9,000 events taken from the dump" in out
    assert "processed now: 0 chunk(s), 0 events" in out
    total = out.split("total (wall)")[1].split("│")
    assert total[-2].strip() == "-"  # no events/s: nothing was processed
