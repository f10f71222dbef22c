"""Example simulators for the configs in this folder (``data.simulator.function``).

``blob_maps``: a 16 x 16 map of one Gaussian blob at the centre with amplitude ``theta[0]`` and
width ``theta[1]`` (pixels), plus white noise of standard deviation 0.1. A CNN summarises it.
"""

import jax
import jax.numpy as jnp

SIZE = 16


def blob_maps(key, theta):
    """One map for one parameter vector ``(amplitude, width)``: a JAX simulator."""
    y, x = jnp.mgrid[0:SIZE, 0:SIZE] - (SIZE - 1) / 2.0
    amplitude, width = theta[0], theta[1]
    image = amplitude * jnp.exp(-(x**2 + y**2) / (2.0 * width**2))
    return image + 0.1 * jax.random.normal(key, (SIZE, SIZE))
