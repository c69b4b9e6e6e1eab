"""Pooled reference for the site-stratified Cox model: statsmodels PHReg, Breslow ties, strata = site.

usage: python3 cox.py ROWS.csv   (columns: site, time, event, x0..x{p-1})
prints JSON {params, bse, llf}
"""
import json, sys

import numpy as np
from statsmodels.duration.hazard_regression import PHReg

rows = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)
site, time, event, x = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3:]
res = PHReg(time, x, status=event, strata=site, ties="breslow").fit(gtol=1e-12)
print(json.dumps({"params": res.params.tolist(), "bse": res.bse.tolist(), "llf": float(res.llf)}))
