"""Merging a sharded benchmark: the output folders of ``dhr bench --shard i/k`` into one report."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from dhr.bench.report import summarize, verdicts, write_report
from dhr.errors import ConfigError
from dhr.fileio import read_json

__all__ = ["merge_results"]


def merge_results(folders: Sequence[str | Path], out: str | Path) -> dict:
    """Combines the output folders of a sharded benchmark (``shard=(i, k)`` for every i) into one report.

    The shards must come from the same benchmark (same data, model, methods, steps, seed, ...); each
    shard index must appear once and all k must be present. Images are put back in the sorted order of
    the whole run, summaries and verdicts are recomputed over all of them, and the shards'
    qualitative sheets are copied.

    Returns:
        The merged results dict (as written to ``out/results.json``).

    Raises:
        ConfigError: Missing or unreadable ``results.json``, shards of different benchmarks, a shard given
            twice or missing.
    """
    loaded = []
    for f in folders:
        path = Path(f) / "results.json"
        try:
            loaded.append((Path(f), read_json(path)))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: cannot read a benchmark result ({e}); run dhr bench --shard I/K into that "
                              "folder first") from None
        if not isinstance(loaded[-1][1], dict) or not isinstance(loaded[-1][1].get("benchmark"), dict):
            raise ConfigError(f"{path} is not a dhr bench result (no 'benchmark' section); give the output folders "
                              "of dhr bench --shard I/K runs")
    if not loaded:
        raise ConfigError("nothing to merge: give the output folders of the shards")

    def identity(r: dict) -> dict:
        b = dict(r["benchmark"])
        for k in ("shard", "command"):
            b.pop(k, None)
        return b

    ref = identity(loaded[0][1])
    seen: dict[int, Path] = {}
    counts = set()
    for folder, r in loaded:
        shard = r["benchmark"].get("shard")
        if shard is None:
            raise ConfigError(f"{folder} holds an unsharded benchmark; only --shard I/K outputs can be merged")
        if identity(r) != ref:
            diff = sorted(k for k in set(ref) | set(identity(r)) if ref.get(k) != identity(r).get(k))
            raise ConfigError(f"{folder} is a different benchmark from {loaded[0][0]} (differs in {diff})")
        i, k = shard
        counts.add(k)
        if i in seen:
            raise ConfigError(f"shard {i}/{k} is given twice: {seen[i]} and {folder}")
        seen[i] = folder
    if len(counts) != 1:
        raise ConfigError(f"shards of different counts {sorted(counts)} cannot be merged")
    (k,) = counts
    missing = sorted(set(range(k)) - set(seen))
    if missing:
        raise ConfigError(f"shards {missing} of {k} are missing; run them with --shard I/{k}")
    first = loaded[0][1]
    images = sorted((img for _, r in loaded for img in r["images"]), key=lambda d: d["image"])
    failures = [f for _, r in loaded for f in r["failures"]]
    labels = first["benchmark"]["methods"]
    merged = {key: first[key] for key in first if key not in ("images", "failures", "summary", "verdicts", "files")}
    merged["benchmark"] = {**first["benchmark"], "shard": None,
                           "merged_from": [str(seen[i]) for i in range(k)]}
    commands = [r["benchmark"].get("command") for _, r in sorted(loaded, key=lambda fr: fr[1]["benchmark"]["shard"][0])]
    if any(commands):
        merged["benchmark"]["command"] = "\n".join(c for c in commands if c)
    merged["environment"] = {**first["environment"], "shards": k}
    merged["images"], merged["failures"] = images, failures
    merged["summary"] = summarize(images, labels)
    merged["verdicts"] = verdicts(images, labels, reference="dhr", seed=first["benchmark"]["seed"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Path] = {}
    for i in range(k):
        for q in sorted(seen[i].glob("qualitative_*.png")):
            dst = out / f"qualitative_s{i}_{q.stem.split('_')[-1]}.png"
            shutil.copyfile(q, dst)
            extra[dst.stem] = dst
    write_report(merged, out, extra=extra)
    return merged
