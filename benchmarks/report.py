"""Markdown tables from a pytest-benchmark JSON file.

    pytest benchmarks --benchmark-only --benchmark-json=results.json
    python benchmarks/report.py results.json [more.json ...] > table.md

One table per benchmark group (one thing at one size): mean time and the rates the harness
recorded, as a share of the measured hardware rates where there are some (matmul FLOP/s of the
same dtype, copy bytes/s, from any of the files: a suite split over several runs on one machine
shares them), and peak memory. Under each table, every
fastunlearn implementation's time and peak memory divided by each peer's (below 1: less;
memory only where both peaks reach 1 MiB).
"""

from __future__ import annotations

import argparse
import json
import sys

OURS_PREFIX = "fastunlearn"
# CPU peaks are RSS, counted in pages and blurred by the allocator: below this, a ratio is noise.
MIN_PEAK_FOR_RATIO = 1 << 20


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".strip()
    return f"{value:.3g} {unit}".strip()


def _seconds(value: float) -> str:
    for factor, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if value >= factor:
            return f"{value / factor:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def _mebibytes(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


def _label(bench: dict) -> str:
    info = bench["extra_info"]
    if "impl" in info:
        return info["impl"]
    if info.get("kind") == "matmul":
        return f"matmul {info['dtype']}"
    return info.get("kind", bench["name"])


def _load(fastunlearn: dict, when: str) -> str:
    load = fastunlearn.get(f"load_average_{when}")
    return "/".join(f"{value:.1f}" for value in load) if load else "?"


def hardware_rates(benchmarks: list[dict]) -> tuple[dict, dict]:
    """The best measured (device, dtype) -> matmul FLOP/s and device -> copy bytes/s."""
    matmul, copy = {}, {}
    for bench in benchmarks:
        info = bench["extra_info"]
        if info.get("kind") == "matmul" and "flop_per_s" in info:
            key = (info["device"], info["dtype"])
            matmul[key] = max(matmul.get(key, 0.0), info["flop_per_s"])
        elif info.get("kind") == "copy" and "bytes_per_s" in info:
            copy[info["device"]] = max(copy.get(info["device"], 0.0), info["bytes_per_s"])
    return matmul, copy


HEADERS = (
    "implementation",
    "mean",
    "stddev",
    "rounds",
    "tokens/s",
    "FLOP/s",
    "of matmul",
    "bytes/s",
    "of copy",
    "peak memory",
)


def _figures(bench: dict, matmul: dict, copy: dict) -> dict[str, str]:
    """Header -> cell for the figures this benchmark has."""
    info, stats = bench["extra_info"], bench["stats"]
    figures = {
        "implementation": _label(bench),
        "mean": _seconds(stats["mean"]),
        "stddev": _seconds(stats["stddev"]),
        "rounds": str(stats["rounds"]),
    }
    hardware = info.get("kind") is not None
    if "tokens_per_s" in info:
        figures["tokens/s"] = _si(info["tokens_per_s"], "")
    if "flop_per_s" in info:
        figures["FLOP/s"] = _si(info["flop_per_s"], "FLOP/s")
        peak = matmul.get((info.get("device"), info.get("dtype")))
        if peak and not hardware:
            figures["of matmul"] = f"{100 * info['flop_per_s'] / peak:.0f}%"
    if "bytes_per_s" in info:
        figures["bytes/s"] = _si(info["bytes_per_s"], "B/s")
        peak = copy.get(info.get("device"))
        if peak and not hardware:
            figures["of copy"] = f"{100 * info['bytes_per_s'] / peak:.0f}%"
    if "peak_memory_bytes" in info:
        figures["peak memory"] = _mebibytes(info["peak_memory_bytes"])
    elif "peak_memory_error" in info:
        figures["peak memory"] = f"n/a ({info['peak_memory_error']})"
    return figures


def _ratio_lines(rows: list[dict]) -> list[str]:
    ours = [b for b in rows if _label(b).startswith(OURS_PREFIX)]
    peers = [b for b in rows if not _label(b).startswith(OURS_PREFIX)]
    if not ours or not peers:
        return []
    lines = ["", "fastunlearn / peer (time; peak memory):", ""]
    lines.append("| | " + " | ".join(f"vs {_label(p)}" for p in peers) + " |")
    lines.append("|---" * (len(peers) + 1) + "|")
    for mine in ours:
        cells = []
        for peer in peers:
            cell = f"{mine['stats']['mean'] / peer['stats']['mean']:.2f}x"
            mine_peak = mine["extra_info"].get("peak_memory_bytes")
            peer_peak = peer["extra_info"].get("peak_memory_bytes")
            if mine_peak is not None and min(mine_peak, peer_peak or 0) >= MIN_PEAK_FOR_RATIO:
                cell += f"; {mine_peak / peer_peak:.2f}x"
            cells.append(cell)
        lines.append(f"| {_label(mine)} | " + " | ".join(cells) + " |")
    return lines


def _order(bench: dict) -> tuple[int, str]:
    return (0 if _label(bench).startswith(OURS_PREFIX) else 1, _label(bench))


def _run_header(results: dict) -> str:
    machine = results.get("machine_info", {})
    fastunlearn = machine.get("fastunlearn", {})
    commit = results.get("commit_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", "?")
    dirty = " (dirty)" if commit.get("dirty") else ""
    return (
        f"Run {results.get('datetime', '?')} | commit {commit.get('id', '?')[:12]}{dirty} | "
        f"mode {fastunlearn.get('mode', '?')} | device {fastunlearn.get('device', '?')} | "
        f"CPU {cpu} | torch {fastunlearn.get('torch', '?')}, "
        f"{fastunlearn.get('torch_threads', '?')} threads | load average (1/5/15 min) "
        f"{_load(fastunlearn, 'start')} at start, {_load(fastunlearn, 'end')} at end"
    )


def render(*runs: dict) -> str:
    """Tables for one or more result files; a line per file says where and when it ran."""
    benchmarks = [b for results in runs for b in results["benchmarks"] if b.get("stats")]
    lines = [_run_header(results) for results in runs]
    matmul, copy = hardware_rates(benchmarks)
    groups: dict[str, list[dict]] = {}
    for bench in benchmarks:
        groups.setdefault(bench["group"] or bench["name"], []).append(bench)
    for group, rows in groups.items():
        rows.sort(key=_order)
        table = [_figures(bench, matmul, copy) for bench in rows]
        headers = [header for header in HEADERS if any(header in figures for figures in table)]
        lines += ["", f"### {group}", ""]
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|---" * len(headers) + "|")
        lines += [
            "| " + " | ".join(figures.get(header, "") for header in headers) + " |"
            for figures in table
        ]
        lines += _ratio_lines(rows)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="files written by pytest --benchmark-json")
    args = parser.parse_args(argv)
    runs = []
    for path in args.results:
        with open(path) as handle:
            runs.append(json.load(handle))
    sys.stdout.write(render(*runs))


if __name__ == "__main__":
    main()
