"""A VAE with a VampPrior (Tomczak & Welling, "VAE with a VampPrior", AISTATS 2018), written
as a user would: a Pyro model/guide pair and nothing else.

The prior over z is the mixture of the encoder's posteriors at K learned pseudo-inputs,
p(z) = 1/K sum_k q(z | u_k), in place of N(0, I). probgen trains it, scores it (ELBO,
IWAE-k, AIS from the program's traces) and puts it beside the built-in VAE:

    probgen train program --model examples/vampprior_vae.py:VampPriorVAE --data mnist-5k --out runs/vamp
    probgen eval runs/vamp --k 1000 --ais
    probgen compare --data mnist-5k --models vae,examples/vampprior_vae.py:VampPriorVAE --budget 4 --out cmp
    python examples/vampprior_vae.py --smoke --out /tmp/vamp       (the same from Python, seconds)
"""

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class VampPriorVAE(nn.Module):
    data_options = {"binarize": "dynamic"}  # Bernoulli pixels, binarised afresh every batch

    def __init__(self, data_shape=(1, 28, 28), latent_dim=40, hidden=300, pseudo_inputs=50):
        super().__init__()
        d = math.prod(data_shape)
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(nn.Linear(d, hidden), nn.Softplus(), nn.Linear(hidden, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Softplus(), nn.Linear(hidden, d))
        self.pseudo = nn.Parameter(torch.randn(pseudo_inputs, d) * 0.1)  # u_k, before a sigmoid

    def q(self, x):
        loc, log_scale = self.encoder(x.reshape(x.shape[0], -1)).chunk(2, dim=-1)
        return dist.Normal(loc, log_scale.clamp(-8, 4).exp()).to_event(1)

    def prior(self):
        comps = self.q(torch.sigmoid(self.pseudo))  # batch (K,), event (L,)
        mix = dist.Categorical(logits=torch.zeros(comps.batch_shape, device=self.pseudo.device))
        return dist.MixtureSameFamily(mix, comps)

    def model(self, x):
        pyro.module("vamp", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x.reshape(x.shape[0], -1))

    def guide(self, x):
        pyro.module("vamp", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.q(x))


if __name__ == "__main__":
    from _program_main import run

    run(VampPriorVAE, name="VampPriorVAE")
