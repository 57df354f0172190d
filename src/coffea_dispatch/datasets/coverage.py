"""`samples --sites-table`: how much of each dataset each site holds, and how much is read from it.

Choosing --allow-sites or --prefer-sites needs to know which sites hold a whole dataset: a site holding 60 %
of it makes every job read the rest from elsewhere. Per line of datasets.txt and per site: the files it
holds a usable replica of (rucio: disk, available, not volatile; other sources: the server each URL names),
that as a fraction of the line's files, and how many files the sample JSON reads from it (first replica).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table


@dataclass(frozen=True)
class Coverage:
    sample: str
    entry: str
    site: str
    held: int  # files with a usable replica at the site
    files: int  # files of the line
    chosen: int  # files whose first replica is at the site

    @property
    def fraction(self) -> float:
        return self.held / self.files if self.files else 0.0


def coverage(listed) -> list[Coverage]:
    """One row per (line of datasets.txt, site), sites by files held (most first), then by name."""
    rows = []
    for answer in listed:
        held: dict[str, int] = {}
        chosen: dict[str, int] = {}
        for listed_file in answer.files:
            for site in dict.fromkeys(listed_file.sites):
                held[site] = held.get(site, 0) + 1
            if listed_file.sites:
                chosen[listed_file.sites[0]] = chosen.get(listed_file.sites[0], 0) + 1
        request, total = answer.request, len(answer.files)
        for site in sorted(held, key=lambda s: (-held[s], s)):
            rows.append(Coverage(request.name, request.entry, site, held[site], total, chosen.get(site, 0)))
    return rows


def coverage_table(rows: list[Coverage]) -> Table:
    table = Table(title="sites: files held per dataset")
    for column in ("sample", "dataset or path", "site", "files held", "fraction", "read from it"):
        table.add_column(column, justify="left" if column in ("sample", "dataset or path", "site") else "right")
    for row in rows:
        table.add_row(
            row.sample, row.entry, row.site, f"{row.held:,} / {row.files:,}", f"{row.fraction:.0%}", f"{row.chosen:,}"
        )
    return table
