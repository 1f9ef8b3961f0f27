"""A mixture of VAEs: a discrete latent c (which of K decoders drew x) that the guide leaves
out and probgen sums over (Pyro's enumeration), beside a continuous z with an encoder.

    p(c) = Cat(pi),  p(z) = N(0, I),  p(x | z, c) = Bernoulli(decoder(z)[c]);  q(z | x)

Training uses TraceEnum_ELBO (the model marks c with infer={"enumerate": "parallel"}), and the
bounds sum c out exactly, so the ELBO is that of q(z|x) p(c|x, z):

    probgen train program --model examples/mixture_of_vaes.py:MixtureOfVAEs --data mnist-5k --out runs/mix
    probgen eval runs/mix --k 1000 --ais
    python examples/mixture_of_vaes.py --smoke --out /tmp/mix
"""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from torch import nn


class MixtureOfVAEs(nn.Module):
    data_options = {"binarize": "dynamic"}

    def __init__(self, data_shape=(1, 28, 28), components=3, latent_dim=20, hidden=300):
        super().__init__()
        self.d, self.k, self.latent_dim = math.prod(data_shape), components, latent_dim
        self.encoder = nn.Sequential(nn.Linear(self.d, hidden), nn.Softplus(), nn.Linear(hidden, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Softplus(), nn.Linear(hidden, components * self.d))
        self.mix_logits = nn.Parameter(torch.zeros(components))

    def model(self, x):
        pyro.module("mix", self)
        x = x.reshape(x.shape[0], -1)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=self.mix_logits), infer={"enumerate": "parallel"})
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            logits = self.decoder(z).reshape(*z.shape[:-1], self.k, self.d)
            pyro.sample("x", dist.Bernoulli(logits=Vindex(logits)[..., c, :]).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("mix", self)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encoder(x.reshape(x.shape[0], -1)).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, log_scale.clamp(-8, 4).exp()).to_event(1))


if __name__ == "__main__":
    from _program_main import run

    run(MixtureOfVAEs, name="MixtureOfVAEs")
