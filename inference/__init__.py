"""The algorithms that fit and score the models (installed as ``probgen.inference``).

One algorithm per module; this table of contents imports them lazily, so that
``import probgen.inference`` stays cheap and ``from probgen.inference import fit_svi`` works.

=================  ==========================================================================
module             what it does
=================  ==========================================================================
``loop``           :func:`train_loop`: steps, NaN policy, stopping, callbacks, checkpoints;
                   the process-group operations come in as :class:`ProcessGroup` hooks
``svi``            :func:`fit_svi` trains any Pyro model/guide pair on ``Trace_ELBO`` (NaN-safe)
``elbo``           :class:`Trace_ELBO`: Pyro's, with a short path for reparametrised guides
``objectives``     :class:`IWAE` and :class:`DReG`: importance-weighted training objectives
``bounds``         :func:`elbo` and :func:`iwae_bound` per example, chunked over samples
``program_bounds`` the same bounds and AIS for any Pyro program, from its traces alone
``ais``            annealed importance sampling (:class:`AISOptions`), and the BDMC sandwich
``hmc``            the HMC transition on a tempered posterior and its step-size adaptation
``grid``           the best value of a grid on validation data, with a warning at its edge
``parzen``         the Parzen-window estimate (with the warning it must carry)
``em``             EM for Gaussian mixtures on sufficient statistics (log space, Cholesky)
``kmeans``         k-means++ seeding and Lloyd iterations
``kl``             fitting q to p by forward KL(p||q) and by reverse KL(q||p)
``adversarial``    GAN losses and the alternating discriminator/generator steps
=================  ==========================================================================
"""

import importlib

_EXPORTS = {
    "train_loop": "loop", "LoopOptions": "loop", "ProcessGroup": "loop", "FitResult": "loop",
    "FitState": "loop",
    "fit_svi": "svi", "fit_loss": "svi", "Trace_ELBO": "elbo",
    "IWAE": "objectives", "DReG": "objectives", "make_objective": "objectives",
    "elbo": "bounds", "iwae_bound": "bounds", "ELBORecord": "bounds", "IWAERecord": "bounds",
    "program_elbo": "program_bounds", "program_iwae_bound": "program_bounds",
    "program_ais": "program_bounds", "program_log_weights": "program_bounds",
    "check_program": "program_bounds", "as_program": "program_bounds",
    "ProgramModel": "program_bounds", "ProgramStructure": "program_bounds",
    "ais": "ais", "bdmc": "ais", "reverse_ais": "ais", "select_sigma": "ais",
    "gaussian_observation": "ais", "AISResult": "ais", "BDMCResult": "ais",
    "AISOptions": "ais", "hmc_transition": "hmc", "best_on_grid": "grid",
    "parzen": "parzen", "select_bandwidth": "parzen", "PARZEN_WARNING": "parzen",
    "run_em": "em", "best_of_em": "em", "e_step": "em", "m_step": "em", "ConvergenceWarning": "em",
    "KMeans": "kmeans", "kmeans_plusplus": "kmeans", "lloyd": "kmeans",
    "fit_forward_kl": "kl", "fit_reverse_kl": "kl", "kl_monte_carlo": "kl",
    "kl_quadrature_1d": "kl", "StratifiedMixtureELBO": "kl",
    "fit_gan": "adversarial", "GANTrainer": "adversarial", "LOSSES": "adversarial",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
