"""A model factory for the corpus: it defines build_net, so a manifest asking for `build` is wrong.

Never imported by the tests (validate reads it with ast, without torch)."""

import torch


def build_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
