"""Costs fxdrop adds: scoring per training step, a boundary's check, and the rewrite (+ recompile) per drop event."""

import pytest
import torch

import fxdrop

from .cases import model_for, rounds, sync

INTERVAL = 50


def _model(request):
    chosen = request.config.getoption("--bench-models")
    if chosen:
        return chosen.split(",")[0], 32
    big = request.config.getoption("--bench-set") != "smoke"
    return ("resnet152", 32) if big else ("resnet18", 32)


def test_scoring_overhead_per_step(benchmark, request):
    """``INTERVAL`` calls of ``net.step()`` (one scoring boundary): per-step cost = mean / INTERVAL.
    bench/report.py relates it to the train-step time of the same model."""
    name, size = _model(request)
    dev = request.config.getoption("--bench-device")
    model = model_for(name, size, dev)
    pol = fxdrop.LearnAndDrop(interval=INTERVAL)  # no batch held: it scores, it checks nothing
    net = fxdrop.wrap(model, example_inputs=(torch.randn(1, 3, size, size, device=dev),), policy=pol)
    benchmark.group = f"overhead {name}"
    benchmark.extra_info.update(model=name, size=size, device=dev, kind="scoring", interval=INTERVAL)

    def steps():
        for _ in range(INTERVAL):
            net.step()
        sync(dev)

    benchmark.pedantic(steps, rounds=max(3, rounds(request.config)), warmup_rounds=1)
    assert net.units[0].scores, "the benchmark must have scored"


def test_check_per_boundary(benchmark, request):
    """One boundary's check as LearnAndDrop runs it: the held batches (2 x 64 rows) through the current
    graph and the candidate sets of 1, n/2 and n units, sharing their prefix (bench/report.py relates it
    to the train-step time: a check per interval of k steps costs its time / k per step)."""
    import torch.nn.functional as F

    name, size = _model(request)
    dev = request.config.getoption("--bench-device")
    pol = fxdrop.LearnAndDrop(interval=10**6)
    net = fxdrop.wrap(model_for(name, size, dev), example_inputs=(torch.randn(1, 3, size, size, device=dev),),
                      policy=pol).train()
    for step in range(2):  # two held batches with their labels (read off the loss's gradient)
        pol.probe.stride = 1
        out = net(torch.randn(64, 3, size, size, device=dev))
        F.cross_entropy(out, torch.arange(64, device=dev) % out.shape[1]).backward()
        net.step()
    names = [u.name for u in net.units]
    graphs = [net.candidate_graph(names[:n]) for n in sorted({len(names), max(1, len(names) // 2), 1})]
    benchmark.group = f"overhead {name}"
    benchmark.extra_info.update(model=name, size=size, device=dev, kind="check", interval=INTERVAL)
    res = benchmark.pedantic(lambda: pol._losses(pol.probe, graphs), rounds=max(3, rounds(request.config)))
    assert res.labelled and res.rows == 128 and len(res.candidates) == len(graphs)


@pytest.mark.parametrize("mode", ["eager", pytest.param("compiled", marks=pytest.mark.slow)])
def test_rewrite_per_drop_event(benchmark, request, mode):
    """One drop event: ``net.drop(unit)`` (bypass pass + GraphModule recompile) and, compiled, the
    first forward of the new graph (torch.compile's recompilation). Restored between rounds."""
    name, size = _model(request)
    dev = request.config.getoption("--bench-device")
    if mode == "compiled" and request.config.getoption("--bench-no-compile"):
        pytest.skip("--bench-no-compile")
    model = model_for(name, size, dev)
    x = torch.randn(2, 3, size, size, device=dev)
    net = fxdrop.wrap(model, example_inputs=(x[:1],), compile=mode == "compiled").eval()
    unit = net.units[len(net.units) // 2].name
    benchmark.group = f"rewrite {name}"
    benchmark.extra_info.update(model=name, size=size, device=dev, kind="rewrite", mode=mode, units=len(net.units))
    counter = iter(range(10**6))

    def setup():  # a fresh dropped set each round, so the compiled cache never serves it
        net.restore_all()
        net.drop(*[u.name for u in net.units][: next(counter) % 3])
        return (), {}

    def event():
        net.drop(unit)
        if mode == "compiled":
            with torch.no_grad():
                net(x)
            sync(dev)

    r = 1 if mode == "compiled" else max(3, rounds(request.config))
    benchmark.pedantic(event, setup=setup, rounds=r)
    assert unit in net.dropped
