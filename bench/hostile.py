"""The hostile corpus (tests/hostile.py) end to end, as a site would meet it: each hostile source run
by `medtrinity run` in its own process (in-process runner, so every decode is in the measured
process), every crafted archive through `medtrinity sources unpack`, and two runs of one source at
once with different shard sizes. Then every output, log and failure record is searched for the
planted identifiers, records for images from outside a source root, and the outside folder for
files an archive wrote.

    BENCH hostile inputs=N rejected_with_reason=N escaped=0 phi_found=0 peak_mb=... limit_mb=... PASS
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq

from tests.support.hostile import (
    corpus_env,
    escaped_records,
    leaked_secrets,
    output_texts,
    outside_files,
    run_cli,
    write_hostile_corpus,
)

LIMIT_MB = 1500
"""The most memory one hostile run may take: the in-process pipeline itself takes about 800 MB."""


def concurrent_runs(corpus, out: Path) -> tuple[int, int, int]:
    """Two `medtrinity run`s of one source into one output, shard sizes 2 and 3, started together:
    (runs that finished, runs refused by the lease, duplicate record ids in the published shards)."""
    env = corpus_env(corpus, out)
    command = [sys.executable, "-m", "medtrinity_tasks.cli", "run", "hostile_reports", "--out", str(out)]
    procs = [
        subprocess.Popen([*command, "--shard-size", size], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for size in ("2", "3")
    ]
    done = [(p.wait(timeout=600), p.stderr.read().decode()) for p in procs]
    finished = sum(code == 0 for code, _ in done)
    refused = sum(code == 2 and "lease" in err for code, err in done)
    ids = [
        i
        for path in (out / "sources" / "hostile_reports" / "shards").glob("*.parquet")
        for i in pq.read_table(path, columns=["id"]).column("id").to_pylist()
    ]
    return finished, refused, len(ids) - len(set(ids))


def main() -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="medtrinity-hostile-") as tmp:
        corpus = write_hostile_corpus(Path(tmp) / "corpus")
        out = Path(tmp) / "out"
        env = corpus_env(corpus, out)
        before = outside_files(corpus)
        texts, peaks, inputs, explained, failed = {}, [], 0, 0, []
        for source in corpus.sources:
            run = run_cli(["run", source, "--out", str(out)], env)
            peaks.append(run.peak_mb)
            texts[f"{source} output"] = run.stdout + run.stderr
            if run.code != 0:
                failed.append(f"{source}: {run.stderr.strip().splitlines()[-1:]}")
                continue
            manifest = json.loads((out / "sources" / source / "manifest.json").read_text())
            counts = manifest["counts"]
            if counts["inputs"] != counts["used"] + counts["rejected"]:
                failed.append(f"{source}: manifest does not balance")
            inputs += counts["inputs"]
            explained += sum(bool(r["reason"].strip()) for r in manifest["rejected"])
            print(f"{source}: {counts['inputs']} inputs, {counts['records']} records, {counts['rejected']} rejected")
        for name, archive in corpus.archives.items():
            run = run_cli(["sources", "unpack", "hostile_masks", str(archive)], env)
            peaks.append(run.peak_mb)
            texts[f"unpack {name}"] = run.stdout + run.stderr
            inputs += 1
            explained += run.code in (1, 2) and ("refused" in run.stdout or "MEDTRINITY_ARCHIVE" in run.stderr)
        print(f"{len(corpus.archives)} archives unpacked or refused")
        finished, refused, duplicates = concurrent_runs(corpus, Path(tmp) / "concurrent")
        print(f"two concurrent runs: {finished} finished, {refused} refused by the lease, {duplicates} duplicate ids")
        if finished != 1 or refused != 1 or duplicates:
            failed.append("concurrent runs")
        texts.update(output_texts(out))
        leaks = leaked_secrets(texts)
        escaped = len(escaped_records(out)) + len(outside_files(corpus) - before)
    for where, kinds in leaks.items():
        print(f"PHI found in {where}: {', '.join(kinds)}")
    for failure in failed:
        print(f"failed: {failure}")
    peak = max(peaks)
    phi_found = sum(len(kinds) for kinds in leaks.values())
    ok = not failed and escaped == 0 and phi_found == 0 and peak < LIMIT_MB
    print(f"({time.monotonic() - started:.0f} s)")
    print(
        f"BENCH hostile inputs={inputs} rejected_with_reason={explained} escaped={escaped} phi_found={phi_found} "
        f"peak_mb={peak:.0f} limit_mb={LIMIT_MB} {'PASS' if ok else 'MISS'}"
    )


if __name__ == "__main__":
    main()
