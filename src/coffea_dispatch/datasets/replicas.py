"""Which replica of a rucio file a sample JSON names, and which it falls back on.

rucio lists every replica it knows of, including ones no job can read: a replica on tape (its RSE's
`rse_type` is TAPE) would have to be staged first, one whose state is not AVAILABLE (being copied, lost,
being deleted) is not there, and one on a `volatile` RSE (a cache) may be gone by the time a job opens it.
These are skipped, as coffea's own `rucio_utils` skips them. A file no allowed site holds either fails the
whole list (naming every such file's sites, so the user can widen --allow-sites) or, with
--fallback-redirector, is read through that redirector, as PocketCoffea's --include-redirector does.
"""

from __future__ import annotations

import logging

from coffea_dispatch.datasets.sources import EXTRA, ListedFile, Sites, number, service_call
from coffea_dispatch.errors import DispatchError

AVAILABLE = "AVAILABLE"
FALLBACK = "fallback "  # a file read through --fallback-redirector: its site is this and the redirector


def _rucio_client(timeout: int):
    """rucio-clients' Client, configured as the user's environment says (rucio.cfg: $RUCIO_CONFIG, $RUCIO_HOME;
    on CMS machines the one cvmfs provides), waiting `timeout` seconds per request (its own default: 600)."""
    try:
        from rucio.client import Client
    except ImportError:
        raise DispatchError(f"rucio DIDs need rucio-clients: {EXTRA}") from None
    # rucio's client logs every failed request in colour to the stderr it saw at import (its "baseclient" logger
    # has a handler of its own), also from a query given up at --deadline: the one line we print says it all
    logging.getLogger("baseclient").setLevel(logging.CRITICAL + 1)
    try:
        return Client(timeout=timeout)
    except Exception as error:  # no configuration, no account, authentication refused
        raise DispatchError(f"rucio cannot be used here ({' '.join(str(error).split())[:300]})") from None


def unusable(replica: dict, pfn_facts: dict) -> str | None:
    """Why a replica cannot serve a job (None when it can): tape, volatile, or not AVAILABLE."""
    site = pfn_facts.get("rse", "")
    if str(pfn_facts.get("type", "DISK")).upper() == "TAPE":
        return "tape"
    if pfn_facts.get("volatile"):
        return "volatile"
    state = (replica.get("states") or {}).get(site, AVAILABLE)
    return None if str(state).upper() == AVAILABLE else f"state {state}"


def choose(replica: dict, sites: Sites) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """A file's usable replicas at allowed sites, best first, as (pfn, site); and every site holding it, with
    why it was not used ("" when it was usable but not allowed)."""
    chosen, held = [], {}
    for pfn, facts in (replica.get("pfns") or {}).items():
        site = facts.get("rse", "")
        why = unusable(replica, facts)
        if why is None and sites.allowed(site):
            chosen.append((sites.order(site, int(facts.get("priority") or 0)), pfn, site))
        else:
            held.setdefault(site, why or "not allowed")
    return [(pfn, site) for _, pfn, site in sorted(chosen)], held


def _held_text(held: dict[str, str]) -> str:
    """`T1_IT_CNAF_Tape (tape), T2_CH_CERN (not allowed)`: where a file is, and why no job reads it there."""
    return ", ".join(f"{site} ({why})" for site, why in sorted(held.items())) or "nowhere"


def rucio_files(did: str, sites: Sites, retries: int, timeout: int, fallback: str | None = None) -> list[ListedFile]:
    """A rucio DID's files (`cms:/A/B/NANOAODSIM`), each with its usable replicas at allowed sites, in the
    sites' order; a file no allowed site holds is read through `fallback` (its site says so). Without a
    fallback such files are one error naming the first of them, where it is held, and how many there are."""
    scope, _, name = did.partition(":")
    client = _rucio_client(timeout)
    answer = service_call(
        f"replicas of {did}",
        lambda: list(client.list_replicas([{"scope": scope, "name": name}], schemes=["root"])),
        retries,
        "rucio",
    )
    files, homeless = [], []
    for replica in sorted(answer, key=lambda r: r.get("name", "")):
        chosen, held = choose(replica, sites)
        size = number(replica.get("bytes"))
        if chosen:
            urls = [pfn for pfn, _ in chosen]
            files.append(ListedFile(urls[0], urls[1:], size, sites=tuple(s for _, s in chosen), dataset=name))
        elif fallback:
            url = f"{fallback.rstrip('/')}/{replica.get('name', '')}"
            files.append(ListedFile(url, [], size, sites=(f"{FALLBACK}{fallback}",), dataset=name))
            homeless.append((replica, held))
        else:
            homeless.append((replica, held))
    if homeless and not fallback:
        (first, held), others = homeless[0], len(homeless) - 1
        more = f" (and {others} other file{'s' * (others > 1)})" if others else ""
        raise DispatchError(
            f"rucio: {first.get('name')} has no usable disk replica at an allowed site (held at: "
            f"{_held_text(held)}){more}; change --allow-sites, --block-sites or --sites-regex, or give "
            "--fallback-redirector URL"
        )
    if not files:
        raise DispatchError(f"rucio: {did} has no files")
    return files
