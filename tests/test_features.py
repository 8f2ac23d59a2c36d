import pytest
import torch

from difftrain.core import spectrum
from difftrain.mechanism import features as F

def test_rank_metrics_of_rank_two_features_with_tiny_noise():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(2, 84, generator=g, dtype=torch.float64)
    coords = torch.randn(500, 2, generator=g, dtype=torch.float64) * torch.tensor([5.0, 2.0], dtype=torch.float64)
    phi = coords @ basis + 7.0 + 1e-6 * torch.randn(500, 84, generator=g, dtype=torch.float64)
    ranks, cumulative = spectrum.rank_metrics(phi, rank_tol=1e-3)
    assert ranks["numerical_rank"] == 2
    assert ranks["components_99"] <= 2 and ranks["components_999"] == 2
    assert 1.0 < ranks["effective_rank"] < 2.05
    assert len(cumulative) == 84 and cumulative[-1] == pytest.approx(1.0)
    assert (cumulative[1:] >= cumulative[:-1] - 1e-12).all()


def test_components_at_each_threshold_by_hand():
    # variances 0.5, 0.3, 0.15, 0.05 on four axes: cumulative 0.5, 0.8, 0.95, 1.0, so 90% and
    # 95% need 3 components (0.95 reaches 95% exactly) and 99% and 99.9% need all 4
    d = torch.zeros(4, 84, dtype=torch.float64)
    d[range(4), range(4)] = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64).sqrt()
    ranks, cumulative = spectrum.rank_metrics(torch.cat([d, -d]), 1e-3)
    assert cumulative[:4] == pytest.approx([0.5, 0.8, 0.95, 1.0])
    assert [ranks[k] for k in spectrum.THRESHOLDS] == [3, 3, 4, 4]
    assert ranks["numerical_rank"] == 4


def test_effective_rank_of_isotropic_features_is_full():
    s = torch.eye(84, dtype=torch.float64) * 3  # equal singular values after centring ~ full
    phi = torch.cat([s, -s])
    assert spectrum.rank_metrics(phi, 1e-3)[0]["effective_rank"] == pytest.approx(84, rel=1e-6)


def test_offset_ratio_grows_with_distance_from_origin():
    g = torch.Generator().manual_seed(1)
    cloud = torch.randn(400, 84, generator=g, dtype=torch.float64)
    near, far = F.offset_metrics(cloud), F.offset_metrics(cloud + 100.0)
    assert far["offset_ratio"] > 50 * near["offset_ratio"]

