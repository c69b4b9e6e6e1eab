"""Pooled reference fit for crates/model/tests/glm.rs: statsmodels GLM on all sites' rows together.

usage: python3 glm.py ROWS.csv FAMILY   (columns: site, y, offset, x0..x{p-1}; x0 is the intercept)
prints JSON {params, bse, pvalues, ci_low, ci_high, deviance, scale, llf, aic, iterations}
"""
import json, sys

import numpy as np
import statsmodels.api as sm

rows = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)
family = {"gaussian": sm.families.Gaussian(), "binomial": sm.families.Binomial(),
          "poisson": sm.families.Poisson()}[sys.argv[2]]
y, offset, x = rows[:, 1], rows[:, 2], rows[:, 3:]
res = sm.GLM(y, x, family=family, offset=offset).fit(tol=1e-12)
ci = res.conf_int()
print(json.dumps({
    "params": res.params.tolist(), "bse": res.bse.tolist(), "pvalues": res.pvalues.tolist(),
    "ci_low": ci[:, 0].tolist(), "ci_high": ci[:, 1].tolist(), "deviance": float(res.deviance),
    "scale": float(res.scale), "llf": float(res.llf), "aic": float(res.aic),
}))
