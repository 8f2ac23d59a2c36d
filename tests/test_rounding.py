"""The certificate's rounding margin (rounding.py): derived from the magnitudes involved, so a
network whose score is a small difference of large terms gets the margin it needs."""

import math

import pytest
import torch

from difftrain.certify import bounds as B, rounding as R
from difftrain.certify.cascade import certify_split
from difftrain.core.labels import predict
from difftrain.core.params import CertifyParams
from difftrain.data.cifar import to_float
from difftrain.train.model import Net


def test_gamma_by_hand():
    u = 2.0 ** -24
    assert R.gamma(1, u) == pytest.approx(u / (1 - u), rel=1e-15)
    assert R.gamma(76, u) == pytest.approx(76 * u / (1 - 76 * u), rel=1e-15)  # conv1: 75 + bias
    with pytest.raises(ValueError):
        R.gamma(2 ** 24, u)


def cancelling_net(seed=18):
    """A network whose score is about 1e6 - 1e6: its head sums terms of about 1e4 each to
    nearly cancel the bias, where float32 keeps steps of 0.0625. Seed 18 gives an exact score of
    +2.35 at the image (class x, so correct in exact arithmetic) that float32 computes as
    -0.69 (wrong)."""
    torch.manual_seed(seed)
    net = Net().eval()
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    x = to_float(images).double()  # float32 values, so the network sees x itself
    with torch.no_grad():
        phi = net.features(x.float()).double()[0]
        w = net.head.weight.double()[0]
        net.head.weight.mul_(-1e6 / float(w @ phi))
        net.bias.fill_(float(-(net.head.weight.double()[0] @ phi)))
    return net, images, x


def test_a_score_scaled_margin_accepts_a_wrong_certificate_and_this_one_does_not():
    net, images, x = cancelling_net()
    layers = B.from_net(net)
    label = torch.tensor([0])
    side = torch.ones(1, dtype=B.DTYPE)
    exact = float(B.forward(layers, x))
    with torch.no_grad():
        computed = net(x.float())
    # the premise: right in exact arithmetic by far more than the old margin, wrong in float32
    assert exact > 1.0 and bool(predict(computed)[0] != label)
    eps = 1e-9  # below float32's spacing of pixel values: the ball holds x alone in float32
    old_tolerance = 1e-4 * (1 + abs(float(computed)))
    plain = B.lower_margin(layers, x, side, eps, "crown")
    assert float(plain) > old_tolerance  # the old rule certifies an image float32 gets wrong
    lower, upper = B.box(x, eps)
    errors = R.layer_errors(net, layers, lower, upper)
    ours = B.lower_margin(layers, x, side, eps, "crown", errors=errors)
    margin = R.float64_error(layers, lower, upper, B.ibp(layers, lower, upper, errors), errors)
    assert float(ours) <= float(margin)  # refused: the bound now covers float32's rounding
    assert float(ours) <= float(computed)  # and it lies below what float32 computes
    # the cascade: not certified even at radius 0, where it asks the float32 network itself
    result = certify_split(net, "test", images, label, torch.arange(1),
                           torch.full((1,), math.inf, dtype=torch.float64), (0.0, 1e-7),
                           CertifyParams(), progress=False)
    assert result.radius[0] == -math.inf and result.accuracy() == [0.0, 0.0]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_bound_with_rounding_lies_below_every_float32_score_it_covers(seed):
    # paper-sized weights: the allowance costs little (a few hundredths at radius 0), and the
    # bound stays below the float32 network's scores at the centre and at sampled points
    torch.manual_seed(seed)
    net = Net().eval()
    layers = B.from_net(net)
    x = torch.rand(3, 3, 32, 32).double()
    with torch.no_grad():
        side = torch.sign(net(x.float())).double()
    eps = 0.2 / 255
    lower, upper = B.box(x, eps)
    errors = R.layer_errors(net, layers, lower, upper)
    bound = B.lower_margin(layers, x, side, eps, "crown", errors=errors)
    plain = B.lower_margin(layers, x, side, eps, "crown")
    assert torch.all(bound <= plain) and torch.all(plain - bound < 0.2)
    points = lower + (upper - lower) * torch.rand(8, *x.shape, dtype=B.DTYPE)
    with torch.no_grad():
        for point in (x, *points):
            assert torch.all(side * net(point.float()).double() >= bound)
