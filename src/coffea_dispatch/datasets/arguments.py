"""`coffea-dispatch samples`' options: HiggsDNA's fetch_datasets.py options (same names), with SamplesOptions'
defaults; the form of the JSON and the metadata of coffea's and PocketCoffea's filesets; rucio's sites. Kept
beside what they configure, so the command line stays argument parsing and printing only."""

from __future__ import annotations

import argparse

from coffea_dispatch.datasets.build import INSTANCES, SamplesOptions
from coffea_dispatch.datasets.formats import FORMATS
from coffea_dispatch.datasets.sources import REDIRECTORS, Sites


def add_samples_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of `samples`; the defaults are SamplesOptions' (one place for both ways in)."""
    default = SamplesOptions()
    parser.add_argument(
        "-i",
        "--input",
        required=True,
        help="datasets.txt: '<sample name> <dataset or path>' lines; or a folder: its files (.root, see "
        "--file-extension; --recursive for subfolders) as one sample named after the folder",
    )
    parser.add_argument(
        "-o", "--output", help="the sample JSON to write (default: the input's name, .json; beside a folder given)"
    )
    parser.add_argument("-w", "--where", default=default.where, choices=list(REDIRECTORS), help="region redirector")
    parser.add_argument("-x", "--xrootd", default=None, help="XRootD prefix for DAS files (replaces --where's)")
    parser.add_argument(
        "--fallback",
        nargs="*",
        default=list(default.fallback),
        help="redirectors a DAS file is read through when the first fails, in order (default: %(default)s)",
    )
    parser.add_argument(
        "--dbs-url", dest="dbs_url", default=None, help="DBS's reader URL, used without dasgoclient (default: cmsweb)"
    )
    parser.add_argument("--dbs-instance", dest="dbs_instance", default=default.dbs_instance, choices=INSTANCES)
    parser.add_argument("--mode", default=default.mode, choices=["grid", "local"], help="local: entries are paths")
    parser.add_argument("--recursive", action="store_true", help="list folders' subfolders too")
    parser.add_argument(
        "--file-extension",
        dest="file_extension",
        nargs="*",
        default=list(default.file_extension),
        help="keep files with these endings (default: %(default)s; none given: every file)",
    )
    parser.add_argument("--timeout", type=int, default=default.timeout, help="seconds per query (%(default)s)")
    parser.add_argument(
        "--deadline",
        type=int,
        default=default.deadline,
        help="seconds a line (its queries and retries) or a file's --count-events may take in all (%(default)s)",
    )
    parser.add_argument("--retries", type=int, default=default.retries, help="further attempts per query")
    parser.add_argument("--voms", default=None, help="the grid proxy (default: voms-proxy-info -p, ...)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing sample JSON")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the table, write nothing")
    _form_arguments(parser, default)
    _sites_arguments(parser)


def _form_arguments(parser: argparse.ArgumentParser, default: SamplesOptions) -> None:
    """What the JSON is written as, and what its metadata is read from."""
    parser.add_argument(
        "--format",
        default=default.format,
        choices=list(FORMATS),
        help="higgsdna: {name: [files]} (default); coffea: {name: {files: {file: Events}, metadata}} for coffea's "
        "preprocess, apply_to_fileset and Runner; pocketcoffea: its build_datasets output",
    )
    parser.add_argument("--xsec", default=None, help="cross-sections (pb): JSON {name: xsec} or 'name xsec' lines")
    parser.add_argument(
        "--eras",
        default=None,
        help="year [era] per sample or DAS name: 'name 2022 C' lines or JSON (default: DAS name)",
    )
    parser.add_argument(
        "--sum-weights",
        dest="sum_weights",
        action="store_true",
        help="read every file's events and sum of generator weights into the metadata (kept in the metadata cache)",
    )
    parser.add_argument(
        "--count-events",
        dest="count_events",
        action="store_true",
        help="count the events of files whose source does not say (read once, kept in the metadata cache)",
    )
    parser.add_argument(
        "--keep-unreadable",
        dest="keep_unreadable",
        action="store_true",
        help="with --count-events: keep the files that cannot be read in the JSON (default: named, left out)",
    )
    parser.add_argument("--metadata-cache", dest="metadata_cache", default=None, help="the metadata cache folder")


def _sites_arguments(parser: argparse.ArgumentParser) -> None:
    """rucio: which sites a file is read from."""
    parser.add_argument("--allow-sites", dest="allow_sites", nargs="*", default=[], help="rucio: only these sites")
    parser.add_argument("--block-sites", dest="block_sites", nargs="*", default=[], help="rucio: never these sites")
    parser.add_argument("--sites-regex", dest="sites_regex", default=None, help="rucio: only sites matching this")
    parser.add_argument("--prefer-sites", dest="prefer_sites", nargs="*", default=[], help="rucio: first these")
    parser.add_argument(
        "--fallback-redirector",
        dest="fallback_redirector",
        default=None,
        help="rucio: a file no allowed site holds is read through this redirector (default: such a file is an error)",
    )
    parser.add_argument(
        "--sites-table", dest="sites_table", action="store_true", help="print the files each site holds, per dataset"
    )


def samples_options(args: argparse.Namespace) -> SamplesOptions:
    """The parsed options as SamplesOptions."""
    return SamplesOptions(
        where=args.where,
        xrootd=args.xrootd,
        fallback=tuple(args.fallback or ()),
        dbs_instance=args.dbs_instance,
        mode=args.mode,
        recursive=args.recursive,
        file_extension=tuple(args.file_extension or ()),
        timeout=args.timeout,
        deadline=args.deadline,
        retries=args.retries,
        voms=args.voms,
        dbs_url=args.dbs_url,
        sites=Sites(tuple(args.allow_sites), tuple(args.block_sites), args.sites_regex, tuple(args.prefer_sites)),
        count_events=args.count_events,
        keep_unreadable=args.keep_unreadable,
        metadata_cache=args.metadata_cache,
        format=args.format,
        xsec=args.xsec,
        eras=args.eras,
        fallback_redirector=args.fallback_redirector,
        sum_weights=args.sum_weights,
    )
