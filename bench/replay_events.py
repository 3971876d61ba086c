"""Replay the churn arm of one v8 evidence run with the code checked out and compare its drop events
with the JSON's (decisions are deterministic: the same events mean the rows stand for this code).

    python bench/replay_events.py user 0      # the plain loop's Fashion-MNIST, seed 0 (also r20, mnist)
"""
import json, sys, torch
from fxdrop import data as data_mod
from fxdrop.models import build_model
from fxdrop.train import TrainConfig, TrainRun, train_interleaved
torch.set_num_threads(1)
proto, seed = sys.argv[1], int(sys.argv[2])
if proto == "r20":
    data = data_mod.load("fashion-small"); model = "resnet20"
    cfg = TrainConfig(epochs=5, seed=seed, progress=False, evaluate=False, ld_options={"follow_churn": True})
    f = f"docs/measurements/evidence/v8/resnet20_fashion-small-churn_s{seed}.json"
elif proto == "user":
    data = data_mod.load("fashion-small").limit(1400, None); model = "resnet18"
    cfg = TrainConfig(epochs=15, seed=seed, batch_size=64, schedule="constant", interval=22, progress=False, evaluate=False, ld_options={"follow_churn": True})
    f = f"docs/measurements/evidence/v8/resnet18_fashion-small-user-churn_s{seed}.json"
else:
    data = data_mod.load("mnist-small"); model = "resnet18"
    cfg = TrainConfig(epochs=3, seed=seed, progress=False, evaluate=False, ld_options={"follow_churn": True})
    f = f"docs/measurements/evidence/v8/resnet18_mnist-small-churn_s{seed}.json"
run = TrainRun(lambda: build_model(model, data.num_classes), data, cfg, "learn-and-drop")
train_interleaved([run])
old = {r["label"]: r for r in json.load(open(f))["runs"]}["l&d, churn shock"]
new_ev = [[s, list(n)] for s, n in run.policy.events]
print(proto, seed, "same events" if new_ev == old["events"] else f"DIFFERENT old {old['events']} new {new_ev}",
      "checks", len(old["checks"]), len(run.policy.checks), flush=True)
