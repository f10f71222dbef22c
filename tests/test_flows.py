"""Bijector invariants for the autoregressive and spline flows, and the MADE mask structure."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilijax.nn.made import MADE, MaskedDense

maf_mod = importlib.import_module("ilijax.estimators.maf")
nsf_mod = importlib.import_module("ilijax.estimators.nsf")
made_mod = importlib.import_module("ilijax.estimators.made")

CONTEXT_DIM = 2


def _perturb(params, key, scale=0.3):
    """Moves every parameter off its (identity) initialisation, so the tests see a real map."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [
            a + scale * jax.random.normal(k, a.shape, a.dtype)
            for a, k in zip(leaves, keys, strict=True)
        ],
    )


def _spline_coupling():
    layer = nsf_mod.coupling(nsf_mod.rq_spline(5, 3.0), hidden=8)
    return maf_mod.stack(nsf_mod.then(layer, nsf_mod.lu_linear()), 2)


BIJECTORS = {
    "maf": lambda: maf_mod.stack(
        maf_mod.masked_autoregressive(maf_mod.affine_transformer(), hidden=12), 2
    ),
    "nsf_autoregressive": lambda: maf_mod.stack(
        maf_mod.masked_autoregressive(nsf_mod.rq_spline(5, 3.0), hidden=12), 2
    ),
    "nsf_coupling": _spline_coupling,
    "nsf_coupling_distrax": lambda: maf_mod.stack(
        nsf_mod.coupling(nsf_mod.distrax_rq_spline(5, 3.0), hidden=8), 2
    ),
    "lu_linear": nsf_mod.lu_linear,
}


def _setup(name, dim, seed=0):
    bij = BIJECTORS[name]()
    key = jax.random.fold_in(jax.random.key(seed), dim)
    k_init, k_perturb, k_z, k_c = jax.random.split(key, 4)
    context = jax.random.normal(k_c, (CONTEXT_DIM,))
    params = bij.init(k_init, jnp.zeros(dim), context)
    params = _perturb(params, k_perturb)
    # Spread over the spline interval and past its tails (|z| > 3).
    z = 2.0 * jax.random.normal(k_z, (dim,))
    return bij, params, z, context


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("name", BIJECTORS)
def test_round_trip_and_log_det(name, dim):
    bij, params, z, context = _setup(name, dim)

    @jax.jit
    def run(params, z, context):
        def forward(v):
            return bij.forward_and_log_det(params, v, context)[0]

        def inverse(v):
            return bij.inverse_and_log_det(params, v, context)[0]

        y, log_det = bij.forward_and_log_det(params, z, context)
        z_back, inv_log_det = bij.inverse_and_log_det(params, y, context)
        expected = jnp.linalg.slogdet(jax.jacfwd(forward)(z))[1]
        expected_inv = jnp.linalg.slogdet(jax.jacfwd(inverse)(y))[1]
        return y, log_det, z_back, inv_log_det, expected, expected_inv

    y, log_det, z_back, inv_log_det, expected, expected_inv = run(params, z, context)
    assert y.shape == z.shape and y.dtype == jnp.float32
    # 1e-4: the quadratic-root inverse of a spline and a triangular solve lose a few ulps per
    # layer relative to |z| ~ 5.
    np.testing.assert_allclose(z_back, z, atol=1e-4)
    np.testing.assert_allclose(log_det + inv_log_det, 0.0, atol=1e-4)
    np.testing.assert_allclose(log_det, expected, atol=1e-4)
    np.testing.assert_allclose(inv_log_det, expected_inv, atol=1e-4)
    assert bij.event_dim(params, context) == dim


@pytest.mark.parametrize("name", ["maf", "nsf_autoregressive", "nsf_coupling"])
def test_identity_at_init(name):
    bij = BIJECTORS[name]()
    z = jnp.array([0.3, -1.2, 4.0])
    context = jnp.ones(CONTEXT_DIM)
    params = bij.init(jax.random.key(0), z, context)
    y, log_det = bij.forward_and_log_det(params, z, context)
    # The stack reverses the event after each of its 2 layers, so 2 layers end in the input order.
    np.testing.assert_allclose(y, z, atol=1e-5)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-5)


def test_made_is_autoregressive():
    dim, num_params = 4, 3
    # tanh, not relu: a point Jacobian of a relu net can vanish on dead units and hide a path.
    net = MADE(num_params=num_params, hidden=(16, 16), activation=jnp.tanh)
    context = jnp.ones(CONTEXT_DIM)
    params = net.init(jax.random.key(0), jnp.zeros(dim), context)
    jac = jax.jacfwd(lambda v: net.apply(params, v, context))(jnp.linspace(-1.0, 1.0, dim))
    assert jac.shape == (dim, num_params, dim)
    dependence = np.abs(np.asarray(jac)).sum(axis=1) > 0  # (output dim i, input j)
    np.testing.assert_array_equal(dependence, np.tril(np.ones((dim, dim), bool), -1))


def test_made_respects_order():
    order = (2, 0, 3, 1)
    net = MADE(num_params=2, hidden=(16,), order=order, activation=jnp.tanh)
    context = jnp.ones(CONTEXT_DIM)
    params = net.init(jax.random.key(1), jnp.zeros(4), context)
    jac = jax.jacfwd(lambda v: net.apply(params, v, context))(jnp.ones(4))
    dependence = np.abs(np.asarray(jac)).sum(axis=1) > 0
    position = np.argsort(order)  # position[i] = place of input i in the ordering
    np.testing.assert_array_equal(dependence, position[:, None] > position[None, :])


def test_made_depends_on_context():
    net = MADE(num_params=2, hidden=(8,), activation=jnp.tanh)
    z = jnp.zeros(3)
    params = net.init(jax.random.key(0), z, jnp.ones(CONTEXT_DIM))
    jac = jax.jacfwd(lambda c: net.apply(params, z, c))(jnp.ones(CONTEXT_DIM))
    assert np.all(np.abs(np.asarray(jac)).sum(axis=-1) > 0)


def test_masked_dense_mask():
    layer = MaskedDense(in_degrees=(1, 2, 3), out_degrees=(1, 2), strict=True)
    np.testing.assert_array_equal(layer.mask(), [[0, 1], [0, 0], [0, 0]])
    layer = MaskedDense(in_degrees=(1, 2, 3), out_degrees=(1, 2))
    np.testing.assert_array_equal(layer.mask(), [[1, 1], [0, 1], [0, 0]])


@pytest.mark.parametrize("make", [nsf_mod.rq_spline, nsf_mod.distrax_rq_spline])
def test_spline_monotone_continuous_identity_tails(make):
    spline = make(6, 3.0)
    params = 1.5 * jax.random.normal(jax.random.key(0), (spline.num_params,))
    x = jnp.linspace(-5.0, 5.0, 4001)

    @jax.jit
    def run(params, x):
        y, log_deriv = spline.inverse(jnp.broadcast_to(params, (*x.shape, params.size)), x)
        grad = jax.vmap(jax.grad(lambda v: spline.inverse(params[None], v[None])[0][0]))(x)
        return y, log_deriv, grad

    y, log_deriv, grad = run(params, x)
    np.testing.assert_array_less(y[:-1], y[1:])
    # Continuous (no jumps at the knots): the largest step is bounded by max slope * dx.
    assert float(jnp.max(jnp.diff(y))) < float(jnp.exp(log_deriv).max()) * 2.5e-3 * 1.01 + 1e-6
    outside = jnp.abs(x) >= 3.0
    np.testing.assert_allclose(y[outside], x[outside], atol=1e-5)
    np.testing.assert_allclose(log_deriv[outside], 0.0, atol=1e-6)
    # The derivative matches autodiff everywhere, knots and tails included.
    np.testing.assert_allclose(jnp.exp(log_deriv), grad, rtol=1e-3, atol=1e-5)


def test_own_spline_matches_distrax():
    bins = 5
    ours, theirs = nsf_mod.rq_spline(bins, 3.0), nsf_mod.distrax_rq_spline(bins, 3.0)
    raw = jax.random.normal(jax.random.key(2), (3 * bins - 1,))
    # distrax's layout: widths, heights, then K + 1 derivatives whose two ends are unused.
    raw_distrax = jnp.concatenate([raw[: 2 * bins], jnp.zeros(1), raw[2 * bins :], jnp.zeros(1)])
    x = jnp.linspace(-4.0, 4.0, 101)
    # Same knots; our interior derivatives use squareplus, distrax's softplus, so compare at the
    # identity-derivative point: with raw derivatives 0 both give slope 1 at every knot.
    raw = raw.at[2 * bins :].set(0.0)
    raw_distrax = raw_distrax.at[2 * bins :].set(0.0)
    y1, ld1 = ours.inverse(jnp.broadcast_to(raw, (101, raw.size)), x)
    y2, ld2 = theirs.inverse(jnp.broadcast_to(raw_distrax, (101, raw_distrax.size)), x)
    np.testing.assert_allclose(y1, y2, atol=1e-5)
    np.testing.assert_allclose(ld1, ld2, atol=1e-4)


def test_factories_validate_and_rebuild():
    from ilijax.estimators import build

    for est in (
        maf_mod.maf(hidden=8, transforms=2),
        nsf_mod.nsf(hidden=8, transforms=2, bins=4, variant="autoregressive"),
        made_mod.made(hidden=8, components=2),
    ):
        assert build(est.spec).spec == est.spec
    with pytest.raises(ValueError, match="variant"):
        nsf_mod.nsf(variant="spline")
    with pytest.raises(ValueError, match="activation"):
        maf_mod.maf(activation="swish")
    with pytest.raises(ValueError, match="transforms"):
        nsf_mod.nsf(transforms=0)
    with pytest.raises(ValueError, match="tail_bound"):
        nsf_mod.nsf(tail_bound=-1.0)
