"""Per-step trajectory detection: traces from one generation pass, AUROCs from those traces."""

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from memgeo.bench import per_step_auroc, trajectory_auroc, trajectory_traces
from memgeo.detect import combined_score
from memgeo.gmm import ConditionalGaussianMixture


def test_per_step_auroc_from_traces():
    mix = ConditionalGaussianMixture.memorization_scenario(dim=4, n_memorized=3, n_generalizing=3, seed=0)
    conds, labels = list(range(mix.n_conditions)), mix.memorized.int().tolist()
    kw = dict(seeds=3, n_steps=6, guidance_scale=7.5, n_directions=2)
    kap, mag, y = trajectory_traces(mix, conds, labels, **kw)
    assert kap.shape == mag.shape == (6, 18) and list(y) == [lab for lab in labels for _ in range(3)]
    curves = per_step_auroc(kap, mag, y)
    neg = torch.as_tensor(y == 0)
    for s in range(6):  # memorized trajectories converge: low kappa-delta, high guidance norm
        assert curves["direction (kappa-delta)"][s] == roc_auc_score(y, -kap[s].numpy())
        assert curves["magnitude (guidance norm)"][s] == roc_auc_score(y, mag[s].numpy())
        comb = combined_score(kap[s], mag[s], reference=(kap[s][neg], mag[s][neg]))
        assert curves["combined"][s] == roc_auc_score(y, comb.numpy())
    same = trajectory_auroc(mix, conds, labels, **kw)  # seeded: the same generations again
    for name, v in curves.items():
        np.testing.assert_array_equal(same[name], v)
