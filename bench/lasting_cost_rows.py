"""Where should a drop's lasting cost be measured? A diagnostic (docs/results.md, "New in v8").

    python bench/lasting_cost_rows.py mnist 0     # ResNet-18 / MNIST benchmark protocol, seed 0
    python bench/lasting_cost_rows.py user 2      # issue 8's plain loop on Fashion-MNIST, seed 2

At every probation end of Learn&Drop (default, training-row checks), the lasting cost
measured on (i) the held training batches the policy uses (recent), (ii) the held batches as they were
when the cohort was dropped (pre-drop rows), (iii) 512 held-out validation rows. Same seed and protocol
as bench/evidence.py; the decisions are the default's (it judges on (i))."""
import json, sys, dataclasses
import torch
from fxdrop import data as data_mod, policy as pol_mod
from fxdrop.models import build_model
from fxdrop.probe import Probe, drop_cost
from fxdrop.train import TrainConfig, TrainRun, train_interleaved

proto, seed = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
if proto == "mnist":
    data = data_mod.load("mnist-small"); cfg = TrainConfig(epochs=3, seed=seed, progress=False, evaluate=False)
    model = "resnet18"
elif proto == "user":
    data = data_mod.load("fashion-small").limit(1400, None)
    cfg = TrainConfig(epochs=15, seed=seed, batch_size=64, schedule="constant", interval=22, progress=False, evaluate=False)
    model = "resnet18"
data = data.hold_out(512)
val = [(data.prepare(x, 3, 32), y) for x, y in data.batches("val", 128)]
rows = []
orig_commit, orig_end = pol_mod.LearnAndDrop.committed, pol_mod.LearnAndDrop._end_probation
snap = {}
def committed(self, names):
    pre = Probe(self.probe.batches, self.probe.samples)
    pre.held, pre.targets = list(self.probe.held), list(self.probe.targets)
    for n in names: snap[n] = pre
    return orig_commit(self, names)
def end(self, step, names):
    net = self.net
    back = net.candidate_graph([], "train", restore=names)
    cur = self._train_graph()
    held = Probe.fixed(val, 4, 128)
    out = {"step": step, "units": names}
    for key, probe in (("recent", self.probe), ("pre-drop", snap[names[0]]), ("held-out", held)):
        (c,) = drop_cost(net.model, back, [cur], probe, step)
        out[key] = {"a": c.accuracy_drop, "d": c.disagreement, "cost": c.cost}
    rows.append(out)
    print(json.dumps(out), flush=True)
    return orig_end(self, step, names)
pol_mod.LearnAndDrop.committed = committed
pol_mod.LearnAndDrop._end_probation = end
run = TrainRun(lambda: build_model(model, 10), data, cfg, "learn-and-drop")
train_interleaved([run])
import subprocess
code = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
doc = {"command": f"python bench/lasting_cost_rows.py {proto} {seed}", "code": code, "checks": rows}
json.dump(doc, open(f"docs/measurements/explore/lasting_cost_rows_{proto}_s{seed}.json", "w"), indent=1)
