"""The ``medtrinity`` command: sample data, the source catalog, and runs without Airflow."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.generation import ENGINES

SAMPLE_SOURCE_IDS = (
    "synthetic_chest_xray",
    "synthetic_ct_abdomen",
    "synthetic_ct_dicom",
    "synthetic_dermoscopy",
    "synthetic_pathology_tiles",
)  # listed here: the CLI parses without numpy


def _samples(args) -> None:
    from medtrinity_tasks.sources.samples import SAMPLE_SOURCES

    out = Path(args.out) if args.out else load_settings().samples_dir
    for source_id in args.source or sorted(SAMPLE_SOURCES):
        root = SAMPLE_SOURCES[source_id](out, cases=args.cases, bad_inputs=args.with_bad_inputs)
        print(f"wrote sample source {source_id} to {root} (SYNTHETIC, not patient data)")


def _sources_list(args) -> int:
    from medtrinity_tasks.sources.catalog import catalog_problems, load_catalog

    settings = load_settings()
    for entry in load_catalog().values():
        try:
            path = entry.location_path(settings)
            staged = "staged" if path.exists() else "not staged"
        except MedtrinityError:  # its location names a variable that is not set
            path, staged = entry.location, "not staged"
        print(f"{entry.id:28} {entry.modality:14} {entry.body_region:8} {staged:10} {path}")
    problems = catalog_problems()
    for problem in problems.values():
        print(f"left out: {problem}")
    return 1 if problems else 0


def _sources_check(args) -> int:
    from medtrinity_tasks.run.accounting import file_counts
    from medtrinity_tasks.sources.catalog import get_source
    from medtrinity_tasks.sources.layouts import check_staged

    settings = load_settings()
    source = get_source(args.source_id, settings)
    inputs, problems = check_staged(source, settings)
    where = source.location_path(settings)
    files = sum(file_counts(inputs).values())
    print(f"{source.id}: {len(inputs)} inputs ({files} files) at {where} ({source.format}, layout {source.layout})")
    for problem in problems:
        print(f"  problem: {problem}")
    if not inputs:
        print("nothing to run: stage the source as its catalog entry says")
    else:
        print("matches the layout" if not problems else f"{len(problems)} problem(s): a run would reject these inputs")
    return 1 if problems else 0


def _sources_pseudonyms(args) -> int:
    """Each file under the source directory (or under each PATH) and the name the run publishes it
    under, for the site that holds the salt: printed to stdout only, never logged or stored."""
    from medtrinity_tasks.sources.catalog import get_source
    from medtrinity_tasks.sources.deid import salt_for

    settings = load_settings()
    source = get_source(args.source_id, settings)
    salt = salt_for(source, settings)  # the pseudonyms are the salt's: without it there is nothing to map
    root = source.location_path(settings)
    published = _published_names(source, settings, salt)
    unknown = 0
    for path in args.paths or [str(root)]:
        relpaths = _files_under(root, Path(path))
        if isinstance(relpaths, str):
            print(f"{path} -> {relpaths}")
            unknown += 1
            continue
        for relpath in relpaths:
            print(f"{relpath} -> {published(relpath)}")
    return 1 if unknown else 0


def _published_names(source, settings, salt: str):
    """A function from a file's path in the source to the name it is published under: for DICOM the
    pseudonym of its series, or its own when the file is an input of its own (rejected); otherwise the
    published path of the input it is, or is the label of. A file that inputs share (a SEG two series
    claim) goes with the first, as ``accounting.file_counts`` counts it."""
    from medtrinity_tasks.phi import pseudonym
    from medtrinity_tasks.sources.dicom_listing import list_dicom_series
    from medtrinity_tasks.sources.layouts import LISTERS, list_inputs

    dicom = LISTERS[source.layout] is list_dicom_series
    names = {}
    for item in list_inputs(source, settings):  # by name: a file that inputs share goes with the first, as counted
        key = item["source_relpath"]
        if dicom:
            for relpath in [*(item.get("member_files") or []), *(item.get("annotation_files") or [])]:
                names.setdefault(relpath, key)
        else:
            names.setdefault(item.get("file_relpath") or key, key)
            if item.get("label_relpath"):
                names.setdefault(item["label_relpath"], f"label of {key}")
    if dicom:
        return lambda relpath: names.get(relpath) or pseudonym(salt, relpath, "file")
    return lambda relpath: names.get(relpath, "not an input of the layout")


def _files_under(root: Path, path: Path) -> list[str] | str:
    """The files at or under ``path`` (absolute, or relative to the working directory), relative to the
    source directory; or why there are none."""
    import os

    base, target = os.path.abspath(root), os.path.abspath(path)
    if os.path.commonpath([base, target]) != base:
        return f"not under the source directory {root}"
    if not os.path.lexists(target):
        return "no such file"
    if not os.path.isdir(target):
        return [Path(target).relative_to(base).as_posix()]
    return sorted(
        Path(folder, name).relative_to(base).as_posix() for folder, _, names in os.walk(target) for name in names
    )


def _sources_unpack(args) -> int:
    from medtrinity_tasks.sources.catalog import get_source
    from medtrinity_tasks.sources.staging import unpack

    settings = load_settings()
    destination = get_source(args.source_id, settings).location_path(settings)
    refused = 0
    for archive in args.archives:
        result = unpack(Path(archive), destination, settings)
        print(f"{result.archive}: {result.extracted} files extracted to {destination}")
        for member, reason in sorted(result.refused.items()):
            print(f"  refused {member!r}: {reason}")
        refused += len(result.refused)
    if refused:
        print(f"{refused} member(s) refused: the archive holds paths that would land outside the source")
    return 1 if refused else 0


def _run(args) -> None:
    from medtrinity_tasks.run.local import run_source

    result = run_source(
        args.source_id, args.out, limit=args.limit, shard_size=args.shard_size, force=args.force, engine=args.engine,
        progress=lambda line: print(line, file=sys.stderr, flush=True), wait_for_lease=args.wait,
    )  # fmt: skip
    _print_result(args.source_id, result)


def _print_result(source_id: str, result: dict) -> None:
    c, files, quality = result["counts"], result.get("files"), result.get("quality") or {}
    where = "in shards" if result.get("published", True) else "passed, none published"  # older manifests: published
    print(
        f"{source_id}: {c['records']} records {where}, {c['quarantined']} quarantined, "
        f"{c['rejected']} of {c['inputs']} inputs rejected"
    )
    print(
        f"files: {files['files']} ({files['used']} used, {files['rejected']} rejected)"
        if files
        else "files: not counted"
    )
    print(f"manifest: {result['manifest_uri']}")
    if quality.get("report_uri"):
        rate, threshold = quality["pass_rate"], quality["threshold"]
        print(f"quality: pass rate {rate:.2f} (threshold {threshold:.2f}); report: {quality['report_uri']}")
    if quality.get("failure"):
        print(f"quality gate failed: {quality['failure']}")
    for title, key in (("rejected inputs", "rejected_by_reason"), ("quarantined records", "quarantined_by_reason")):
        for reason, count in sorted(result.get(key, {}).items(), key=lambda item: -item[1]):
            print(f"  {title}: {count} x {reason}")


def _input_line(row: dict) -> str:
    """One input of ``show --inputs``: its name, files and outcome on one line."""
    files = "files not counted" if row["files"] is None else f"{row['files']} file{'' if row['files'] == 1 else 's'}"
    if row["outcome"] == "rejected":
        return f"{row['input']}: {files}, rejected: {row['reason']}"
    records = "records not counted" if row["records"] is None else f"{row['records']} records"
    return f"{row['input']}: {files}, {records}, {row['quarantined']} quarantined"


def _experts_train_sample(args) -> None:
    from medtrinity_tasks.roi.training import SAMPLE_EXPERT, train_sample_expert

    out = Path(args.out) if args.out else load_settings().models_dir / SAMPLE_EXPERT
    train_sample_expert(out, steps=args.steps, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"MONAI bundle written to {out}")


def _knowledge_index(args) -> None:
    from medtrinity_tasks.knowledge.index import index_corpus, summary_lines

    result = index_corpus(
        args.location, args.corpus, load_settings(), fmt=args.format, recreate=args.recreate,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    print("\n".join(summary_lines(result)))


def _knowledge_search(args) -> None:
    from medtrinity_tasks.knowledge.embeddings import DenseEncoder
    from medtrinity_tasks.knowledge.index import KnowledgeConfig, check_collection, knowledge_client
    from medtrinity_tasks.knowledge.retrieval import search

    knowledge = KnowledgeConfig.from_settings(load_settings())
    encoder = DenseEncoder(knowledge.embedding_model)
    with knowledge_client(knowledge) as client:
        check_collection(client, knowledge, encoder)
        (passages,) = search(client, knowledge.collection, encoder, [args.query], args.k, mode=args.mode)
    for rank, passage in enumerate(passages, 1):
        print(f"{rank:2}. {passage['score']:.4f} {passage['corpus']}/{passage['id']}: {passage['title']}")


def _show(args) -> None:
    from medtrinity_tasks.storage import open_store
    from medtrinity_tasks.storage.shards import manifest_key

    store = open_store(args.out or load_settings().output_uri)
    key = manifest_key(args.source_id)
    if not store.exists(key):
        raise MedtrinityError(f"no manifest for {args.source_id} at {store.key_uri(key)}: run the source first")
    manifest = store.read_json(key)
    if args.inputs and "inputs" not in manifest:
        raise MedtrinityError(f"the manifest at {store.key_uri(key)} lists no inputs (an earlier build): run it again")
    if args.inputs and args.json:  # one JSON object per input, nothing else: for jq and scripts
        for row in manifest["inputs"]:
            print(json.dumps(row))
        return
    _print_result(args.source_id, dict(manifest, manifest_uri=store.key_uri(key)))
    for shard in manifest["shards"]:
        print(f"shard: {shard['uri']} ({shard['records']} records)")
    if args.inputs:
        for row in manifest["inputs"]:
            print(_input_line(row))
        return
    for reject in manifest["rejected"]:
        print(f"rejected {reject['input']}: {reject['reason']}")
    for q in manifest["quarantined"]:
        print(f"quarantined {q['input']} slice {q['slice_index']}: {'; '.join(q['reasons'])}")
    if args.json:
        print(json.dumps(manifest, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medtrinity", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in (_add_samples, _add_sources, _add_run, _add_experts, _add_knowledge, _add_show):
        add_command(commands)
    return parser


def _add_samples(commands) -> None:
    samples = commands.add_parser("samples", help="write the synthetic sample sources")
    samples.add_argument("--out", help="directory (default: MEDTRINITY_SAMPLES_DIR or data/samples)")
    samples.add_argument("--source", action="append", choices=sorted(SAMPLE_SOURCE_IDS), help="only this one")
    samples.add_argument("--cases", type=int, default=8, help="images or volumes per source (default 8)")
    samples.add_argument("--with-bad-inputs", action="store_true", help="add four broken inputs, to see rejects")
    samples.set_defaults(func=_samples)


def _add_sources(commands) -> None:
    sources = commands.add_parser("sources", help="the source catalog").add_subparsers(dest="action", required=True)
    listing = sources.add_parser("list", help="catalog sources, whether they are staged; invalid entries (exit 1)")
    listing.set_defaults(func=_sources_list)
    check = sources.add_parser("check", help="does a staged source match its layout? (exit 1 if not)")
    check.add_argument("source_id")
    check.set_defaults(func=_sources_check)
    pseudonyms = sources.add_parser(
        "pseudonyms", help="which pseudonym each of the source's files is published under (needs the salt)"
    )
    pseudonyms.add_argument("source_id")
    pseudonyms.add_argument("paths", nargs="*", help="files or folders in the source (default: all of it)")
    pseudonyms.set_defaults(func=_sources_pseudonyms)
    unpack = sources.add_parser(
        "unpack", help="extract a provider's archives into the source's location, refusing unsafe members"
    )
    unpack.add_argument("source_id")
    unpack.add_argument("archives", nargs="+", help="tar (any compression) or zip files")
    unpack.set_defaults(func=_sources_unpack)


def _add_run(commands) -> None:
    run = commands.add_parser("run", help="run one source on Ray, without Airflow")
    run.add_argument("source_id")
    run.add_argument(
        "--out", help="output URI: a path or s3://bucket/prefix (default: MEDTRINITY_OUTPUT or data/output)"
    )
    run.add_argument("--limit", type=int, help="use only the first N inputs")
    default_size = load_settings({}).shard_size  # the setting's own default, whatever the environment says
    run.add_argument(
        "--shard-size", type=int, help=f"inputs per shard (default: MEDTRINITY_SHARD_SIZE or {default_size})"
    )
    run.add_argument("--force", action="store_true", help="redo shards that are already finished")
    run.add_argument("--engine", choices=ENGINES, default="template", help="what writes the descriptions")
    run.add_argument(
        "--wait", action="store_true",
        help="if another run is writing this source to this output, wait for it (at most until its lease "
        "expires) instead of refusing",
    )  # fmt: skip
    run.set_defaults(func=_run)


def _add_experts(commands) -> None:
    experts = commands.add_parser("experts", help="ROI expert models").add_subparsers(dest="action", required=True)
    train = experts.add_parser(
        "train-sample", help="train the sample expert on the synthetic CT source and save it as a MONAI bundle"
    )
    train.add_argument("--out", help="bundle directory (default: MEDTRINITY_MODELS_DIR/synthetic_ct_lesions)")
    train.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    train.set_defaults(func=_experts_train_sample)


def _add_knowledge(commands) -> None:
    knowledge = commands.add_parser("knowledge", help="the medical knowledge base (Qdrant)").add_subparsers(
        dest="action", required=True
    )
    index = knowledge.add_parser("index", help="index or refresh a corpus (default: the demo corpus)")
    index.add_argument("location", nargs="?", help="a file, directory or s3:// URI; omit for the demo corpus")
    index.add_argument("--corpus", default="demo", help="the corpus's name in the collection (default: demo)")
    index.add_argument("--format", default="auto", choices=["auto", "medrag", "pubmed", "text"])
    index.add_argument("--recreate", action="store_true", help="drop the collection and build it anew")
    index.set_defaults(func=_knowledge_index)
    find = knowledge.add_parser("search", help="the passages a query retrieves")
    find.add_argument("query")
    find.add_argument("-k", type=int, default=5, help="how many passages (default 5)")
    find.add_argument("--mode", default="hybrid", choices=["dense", "sparse", "hybrid"])
    find.set_defaults(func=_knowledge_search)


def _add_show(commands) -> None:
    show = commands.add_parser("show", help="summarise a source's last run from its manifest")
    show.add_argument("source_id")
    show.add_argument("--out", help="output URI the source was written to")
    show.add_argument("--inputs", action="store_true", help="one line per input: its files, outcome and reason")
    show.add_argument(
        "--json", action="store_true", help="also print the whole manifest; with --inputs, one JSON object per input"
    )
    show.set_defaults(func=_show)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except MedtrinityError as exc:
        print(f"medtrinity: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
