#!/usr/bin/env python3
"""Pooled per-variant regression with statsmodels: the independent computation the federated fits
are checked against. Reads a PLINK .bed/.bim/.fam directly (numpy), the phenotype from the .fam
(case/control 2/1 -> logistic, otherwise quantitative -> OLS) and optional covariates from a
whitespace table with an FID IID header. Prints one JSON object: {"variant": [beta, se, stat, p, n]}
for the dosage of the .bim A1 allele (null when the fit fails).

    glm.py PREFIX [COVAR_FILE NAME,NAME]
"""
import json, sys, warnings
import numpy as np
import statsmodels.api as sm

prefix = sys.argv[1]
fam = [l.split() for l in open(prefix + ".fam")]
bim = [l.split() for l in open(prefix + ".bim")]
n = len(fam)
stride = (n + 3) // 4
raw = np.fromfile(prefix + ".bed", dtype=np.uint8)[3:].reshape(len(bim), stride)
codes = np.stack([(raw >> (2 * k)) & 3 for k in range(4)], axis=2).reshape(len(bim), -1)[:, :n]
dose = np.array([2.0, np.nan, 1.0, 0.0])[codes]

pheno = [f[5] for f in fam]
logistic = set(pheno) <= {"1", "2", "-9", "0"}
if logistic:
    y = np.array([1.0 if p == "2" else 0.0 if p == "1" else np.nan for p in pheno])
else:
    y = np.array([float(p) if p not in ("-9", "NA") else np.nan for p in pheno])
cov = np.zeros((n, 0))
if len(sys.argv) > 3:
    rows = [l.split() for l in open(sys.argv[2])]
    head = rows[0]
    idx = [head.index(c) for c in sys.argv[3].split(",")]
    by = {r[1]: [float(r[i]) for i in idx] for r in rows[1:]}
    cov = np.array([by.get(f[1], [np.nan] * len(idx)) for f in fam])

out = {}
warnings.simplefilter("ignore")
for v, b in enumerate(bim):
    g = dose[v]
    ok = ~np.isnan(g) & ~np.isnan(y) & ~np.isnan(cov).any(axis=1)
    X = np.column_stack([np.ones(ok.sum()), g[ok], cov[ok]])
    try:
        if logistic:
            r = sm.Logit(y[ok], X).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
        else:
            r = sm.OLS(y[ok], X).fit()
        vals = [float(r.params[1]), float(r.bse[1]), float(r.tvalues[1]), float(r.pvalues[1]), int(ok.sum())]
        out[b[1]] = vals if all(np.isfinite(vals)) else None
    except Exception:
        out[b[1]] = None
json.dump(out, sys.stdout)
