"""The report reads pytest-benchmark's JSON format (a fixed sample) and computes the ratios."""

from .report import report


def _b(kind, variant, median, flops_ratio, mode="eager", dropped=0):
    return {"stats": {"median": median, "mean": median}, "extra_info": {
        "kind": kind, "model": "m", "size": 32, "mode": mode, "variant": variant, "flops_ratio": flops_ratio,
        "units_dropped": dropped, "units": 4}}


def test_report_ratios():
    text = report([
        _b("forward", "original", 0.010, 1.0), _b("forward", "wrapped", 0.0101, 1.0),
        _b("forward", "all", 0.006, 0.5, dropped=4), _b("forward", "all", 0.005, 0.5, mode="compiled", dropped=4),
        {"stats": {"median": 0.02, "mean": 0.02}, "extra_info": {"kind": "scoring", "model": "m", "size": 32, "interval": 50}},
    ])
    row = next(line for line in text.splitlines() if "| eager " in line and "| all " in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4:] == ["all", "4/4", "6.00", "0.600", "0.500", "1.20"]  # time ratio 0.6 / FLOPs 0.5
    assert "0.833" in text  # compiled / eager for "all"
    assert "0.4000 ms" in text  # 20 ms / 50 steps
