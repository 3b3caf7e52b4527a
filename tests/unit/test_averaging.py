import pytest
import torch
from torch import nn

from model.averaging import WeightAverage


def test_average_follows_the_weights_with_its_decay():
    net = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    avg = WeightAverage(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(1.0)
    avg.update()                                  # ramp: min(0.5, 2/11) = 2/11 of the old value kept
    torch.testing.assert_close(avg.module.weight, torch.full((1, 2), 9 / 11))
    for _ in range(30):
        avg.update()
    torch.testing.assert_close(avg.module.weight, torch.ones(1, 2))
    with torch.no_grad():
        net.weight.fill_(3.0)
    avg.update()                                  # past the ramp: the configured decay
    torch.testing.assert_close(avg.module.weight, torch.full((1, 2), 2.0))
    assert not avg.module.weight.requires_grad and not avg.module.training


def test_average_state_round_trip_and_bad_decay():
    net = nn.Linear(3, 2)
    avg = WeightAverage(net, decay=0.9)
    avg.update()
    other = WeightAverage(nn.Linear(3, 2), decay=0.9)
    other.load_state_dict(avg.state_dict())
    assert other.updates == 1
    torch.testing.assert_close(other.module.weight, avg.module.weight)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="decay"):
            WeightAverage(net, bad)
