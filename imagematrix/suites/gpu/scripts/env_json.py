"""The versions this Python imports, as env.json of a GPU run: `python env_json.py ROW_JSON [HOST_PREFIX]`.

Run by run_host.sh with the host's Python and by run_image.sh with the image's own. In image mode HOST_PREFIX is the
host Python's sys.prefix: the record says whether it (or any of its paths) was visible inside the image."""

import importlib.metadata as md
import json
import os
import platform
import sys

row = json.load(open(sys.argv[1]))
names = sorted(set(row["pins"]) | {"ray", "flashinfer-python", "numpy", "pytest"})
versions = {}
for name in names:
    try:
        versions[name] = md.version(name)
    except md.PackageNotFoundError:
        versions[name] = None
try:
    import torch
    cuda = {"torch_cuda": torch.version.cuda, "arch_list": torch.cuda.get_arch_list()}
except Exception as exc:  # recorded, not fatal: the suite says the rest
    cuda = {"error": repr(exc)}
facts = {"row": row["id"], "python": platform.python_version(), "executable": sys.executable,
         "versions": versions, **cuda}
if len(sys.argv) > 2:
    host = sys.argv[2]
    facts["isolation"] = {"host_prefix": host, "host_prefix_visible": os.path.exists(host),
                          "sys_path": sys.path,
                          "paths_under_host_prefix": [p for p in sys.path if p == host or p.startswith(host + "/")]}
print(json.dumps(facts, indent=1, sort_keys=True))
