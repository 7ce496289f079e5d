"""benchmarks/report.py: shares of the hardware rates across files, and the ratio lines."""

import json

from benchmarks.report import main, render

MIB = 1 << 20


def _bench(group, mean, **info):
    return {
        "group": group,
        "name": info.get("impl", info.get("kind")),
        "extra_info": info,
        "stats": {"mean": mean, "stddev": mean / 100, "rounds": 20},
    }


def _run(commit, benchmarks):
    return {
        "datetime": "2026-11-23T03:00:00",
        "commit_info": {"id": commit, "dirty": False},
        "machine_info": {"fastunlearn": {"mode": "gpu", "device": "H100"}},
        "benchmarks": benchmarks,
    }


HARDWARE = _run(
    "aaaa",
    [
        _bench(
            "hardware matmul",
            1.0,
            kind="matmul",
            device="cuda",
            dtype="bfloat16",
            flop_per_s=800e12,
        )
    ],
)
OPS = _run(
    "bbbb",
    [
        _bench(
            "linear_nll",
            2e-3,
            impl="liger",
            device="cuda",
            dtype="bfloat16",
            flop_per_s=300e12,
            peak_memory_bytes=200 * MIB,
        ),
        _bench(
            "linear_nll",
            1e-3,
            impl="fastunlearn-triton",
            device="cuda",
            dtype="bfloat16",
            flop_per_s=600e12,
            peak_memory_bytes=300 * MIB,
        ),
    ],
)


def test_rates_from_one_file_apply_to_another():
    table = render(HARDWARE, OPS)
    assert "commit aaaa" in table and "commit bbbb" in table
    ours = next(
        line for line in table.splitlines() if line.startswith("| fastunlearn-triton | 1 ms")
    )
    assert "| 75% |" in ours and "300.0 MiB" in ours
    assert "| fastunlearn-triton | 0.50x; 1.50x |" in table
    # fastunlearn rows come first, then the peers
    assert table.index("| fastunlearn-triton | 1 ms") < table.index("| liger | 2 ms")


def test_without_a_matmul_run_there_is_no_share_column():
    assert "of matmul" not in render(OPS)


def test_command_line_reads_several_files(tmp_path, capsys):
    paths = []
    for name, run in (("hardware.json", HARDWARE), ("ops.json", OPS)):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(run))
    main([str(path) for path in paths])
    assert "| 75% |" in capsys.readouterr().out
