"""Which reference files are conf-dir candidates (the runtime considers .conf, .conflist, .json)."""

from conftest import REFERENCE

CANDIDATES = sorted(p.name for p in REFERENCE.glob("*") if p.name.endswith((".conf", ".conflist", ".json")))
