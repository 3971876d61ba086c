"""One training arm with chosen Learn&Drop knobs, for exploring the decision rule (not timed side by side).

    python bench/explore_policy.py DATASET MODEL TAG 'JSON of LearnAndDrop knobs, "cfg" for TrainConfig' [POLICY]

Writes runs/TAG.json (scores and every check included). docs/method.md cites one such run.
"""
import json, sys, dataclasses, torch, time
from fxdrop import data as D
from fxdrop.train import TrainConfig, train_run, build_model
torch.set_num_threads(1)
ds = sys.argv[1]; model=sys.argv[2]; tag=sys.argv[3]; extra=json.loads(sys.argv[4]); kind=sys.argv[5] if len(sys.argv)>5 else "learn-and-drop"
cfgkw = extra.pop("cfg", {})
data = D.load(ds).limit(cfgkw.pop("train_limit", None), None)
cfg = TrainConfig(progress=True, ld_options=extra, **cfgkw)
cfg.progress=True
fac = lambda: build_model(model, data.num_classes)
t=time.time()
r, pol = train_run(fac, data, cfg, kind)
d = r.to_dict()
d["checks"] = getattr(pol, "checks", [])
d["tag"]=tag
print(json.dumps({k:d[k] for k in ("tag","wall_s","test_acc","flops_ratio","events","epoch_acc")}))
d["command"] = "python bench/explore_policy.py " + " ".join(repr(a) if " " in a or "{" in a else a for a in sys.argv[1:])
json.dump(d, open(f"runs/{tag}.json","w"))
