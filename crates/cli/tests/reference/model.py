"""Independent fits of a regression analysis on the pooled rows (statsmodels).

Usage: model.py FAMILY[:L2] SITE1.csv SITE2.csv ...

Each CSV is a site's design matrix as `medfed model features` writes it (its columns, then `y`, and
`offset` or `event` where the family has them). The sites' rows are pooled; Cox models are stratified
by site, as the federated fit is. With `gaussian:L2` the fit is ridge regression with penalty L2/2 ‖β‖²
off the intercept, solved in closed form with numpy (coefficients only). Prints JSON: {"params": [...], "bse": [...], "llf": ..., "n": ...}.
"""
import json
import sys

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.duration.hazard_regression import PHReg


def main():
    family, files = sys.argv[1], sys.argv[2:]
    family, _, l2 = family.partition(":")
    l2 = float(l2 or 0)
    frames = []
    for k, f in enumerate(files):
        d = pd.read_csv(f)
        d["site"] = k
        frames.append(d)
    d = pd.concat(frames, ignore_index=True)
    extra = {"y", "offset", "event", "site"}
    cols = [c for c in d.columns if c not in extra]
    x = d[cols].to_numpy(dtype=float)
    y = d["y"].to_numpy(dtype=float)
    if l2 > 0:
        if family != "gaussian":
            sys.exit("penalised reference only for the gaussian family")
        pen = np.full(len(cols), l2)
        pen[cols.index("(intercept)")] = 0.0
        beta = np.linalg.solve(x.T @ x + np.diag(pen), x.T @ y)
        out = {"params": beta.tolist(), "bse": None, "llf": None}
    elif family == "cox":
        m = PHReg(y, x, status=d["event"].to_numpy(dtype=float), strata=d["site"].to_numpy(), ties="breslow")
        r = m.fit(gtol=1e-12)
        out = {"params": list(r.params), "bse": list(r.bse), "llf": float(r.llf)}
    else:
        fam = {
            "binomial": sm.families.Binomial(),
            "poisson": sm.families.Poisson(),
            "gaussian": sm.families.Gaussian(),
        }[family]
        offset = d["offset"].to_numpy(dtype=float) if "offset" in d else None
        r = sm.GLM(y, x, family=fam, offset=offset).fit(tol=1e-12)
        out = {"params": list(r.params), "bse": list(r.bse), "llf": float(r.llf), "deviance": float(r.deviance)}
    out["columns"] = cols
    out["n"] = int(len(y))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
