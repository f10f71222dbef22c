"""Contract and density tests for every estimator in ``ilijax.estimators.REGISTRY``.

Each case is a tiny model (width 16, 2 transforms, 3 components, 4 bins) whose randomly
initialised network params are perturbed with N(0, 0.3^2) noise, so that the density is not the
(identity-initialised) standard normal. Each model is jitted once per fixture (module scope).
Monte Carlo checks use z-bounds computed from grid moments; the seeds are fixed and never tuned.
"""

import json
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ilijax.estimators as E
from ilijax.priors import support_bijector, uniform

CASES = {
    "mdn": {"name": "mdn", "config": {"hidden": 16, "components": 3}},
    "made": {"name": "made", "config": {"hidden": 16}},
    "maf": {"name": "maf", "config": {"hidden": 16, "transforms": 2}},
    "nsf-coupling": {
        "name": "nsf",
        "config": {"hidden": 16, "transforms": 2, "bins": 4, "variant": "coupling"},
    },
    "nsf-autoregressive": {
        "name": "nsf",
        "config": {"hidden": 16, "transforms": 2, "bins": 4, "variant": "autoregressive"},
    },
    "realnvp": {"name": "realnvp", "config": {"hidden": 16, "transforms": 2}},
}

Y_DIM, C_DIM = 2, 3
CONTEXT = jnp.array([0.3, -0.5, 0.8], jnp.float32)
NOISE = 0.3
N_SAMPLES = 4000
Z = 5.0  # z-bound for Monte Carlo checks

# Midpoint grid on [-L, L]^2 in standardized units.
L, N_GRID = 8.0, 300
_H = 2 * L / N_GRID
_AXIS = -L + _H * (np.arange(N_GRID) + 0.5)
GRID = jnp.asarray(
    np.stack(np.meshgrid(_AXIS, _AXIS, indexing="ij"), -1).reshape(-1, 2), jnp.float32
)
CELL = _H**2


def test_registry_is_covered():
    # Density estimators only; the NRE classifier has its own tests (test_nre.py), and so has
    # the embedding wrapper, which adds no density of its own (test_embeddings.py).
    assert {spec["name"] for spec in CASES.values()} == set(E.REGISTRY) - {"classifier",
                                                                           "embedded"}


def _perturb(key, net_params):
    leaves, treedef = jax.tree.flatten(net_params)
    keys = jax.random.split(key, len(leaves))
    noisy = [
        a + NOISE * jax.random.normal(k, a.shape, a.dtype)
        for a, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(treedef, noisy)


def _batch_log_prob(est):
    return jax.jit(jax.vmap(est.log_prob, in_axes=(None, 0, None)))


def _batch_sample(est):
    return jax.jit(jax.vmap(est.sample, in_axes=(None, 0, None)))


@pytest.fixture(scope="module", params=list(CASES.values()), ids=list(CASES))
def case(request):
    spec = request.param
    est = E.build(spec)  # every registered module ships with ilijax: a missing one fails
    # One example event: the standardization is the identity (shift 0, scale 1).
    params = est.init(jax.random.key(0), jnp.zeros(Y_DIM), jnp.zeros(C_DIM))
    params = {**params, "net": _perturb(jax.random.key(1), params["net"])}
    log_prob_batch = _batch_log_prob(est)
    density = np.asarray(jnp.exp(log_prob_batch(params, GRID, CONTEXT)), np.float64)
    return SimpleNamespace(
        spec=spec,
        est=est,
        params=params,
        log_prob_batch=log_prob_batch,
        sample_batch=_batch_sample(est),
        density=density,
    )


def _grid_moments(points, density, cell):
    p = density * cell
    p = p / p.sum()
    points = np.asarray(points, np.float64)
    mu = p @ points
    c = points - mu
    cov = (p[:, None, None] * c[:, :, None] * c[:, None, :]).sum(0)
    # E[(c_i c_j)^2]: the variance of one summand c_i c_j of the sample covariance.
    m22 = (p[:, None, None] * (c[:, :, None] * c[:, None, :]) ** 2).sum(0)
    return mu, cov, m22


def test_density_integrates_to_one(case):
    assert np.all(np.isfinite(case.density))
    total = case.density.sum() * CELL
    np.testing.assert_allclose(total, 1.0, rtol=2e-2)


def test_sample_moments_match_grid_moments(case):
    mu, cov, m22 = _grid_moments(GRID, case.density, CELL)
    keys = jax.random.split(jax.random.key(2), N_SAMPLES)
    s = np.asarray(case.sample_batch(case.params, keys, CONTEXT), np.float64)
    assert s.shape == (N_SAMPLES, Y_DIM)
    assert np.all(np.isfinite(s))
    mean_hat = s.mean(0)
    cov_hat = np.cov(s, rowvar=False)
    mean_sd = np.sqrt(np.diag(cov) / N_SAMPLES)
    assert np.all(np.abs(mean_hat - mu) < Z * mean_sd), (mean_hat, mu, mean_sd)
    # Sample covariance entries are averages of c_i c_j, with variance (E[c_i^2 c_j^2] - cov^2)/n.
    cov_sd = np.sqrt((m22 - cov**2) / N_SAMPLES)
    assert np.all(np.abs(cov_hat - cov) < Z * cov_sd + 1e-6), (cov_hat, cov, cov_sd)


def test_standardized_wrapper_integrates_to_one(case):
    key_y, key_c = jax.random.split(jax.random.key(3))
    y_data = 3.0 + 2.0 * jax.random.normal(key_y, (500, Y_DIM))
    c_data = -1.0 + 0.5 * jax.random.normal(key_c, (500, C_DIM))
    params = case.est.init(jax.random.key(0), y_data, c_data)
    np.testing.assert_allclose(params["y_shift"].value, 3.0, atol=0.3)
    np.testing.assert_allclose(params["y_scale"].value, 2.0, atol=0.3)
    params = {**params, "net": case.params["net"]}
    shift, scale = params["y_shift"].value, params["y_scale"].value
    context = params["c_shift"].value + params["c_scale"].value * CONTEXT

    # Exact identity: the wrapper is the core at z-scored inputs, minus sum(log scale).
    y = shift + scale * GRID[:7]
    identity = {**case.params}
    expected = case.log_prob_batch(identity, GRID[:7], CONTEXT) - jnp.sum(jnp.log(scale))
    np.testing.assert_allclose(
        case.log_prob_batch(params, y, context), expected, rtol=1e-5, atol=1e-5
    )

    grid = shift + scale * GRID
    density = np.asarray(jnp.exp(case.log_prob_batch(params, grid, context)), np.float64)
    total = density.sum() * CELL * float(jnp.prod(scale))
    np.testing.assert_allclose(total, 1.0, rtol=2e-2)


def test_shapes_dtypes_vmap_and_keys(case):
    est, params = case.est, case.params
    lp_shape = jax.eval_shape(est.log_prob, params, jnp.zeros(Y_DIM), CONTEXT)
    assert lp_shape.shape == () and lp_shape.dtype == jnp.float32
    s_shape = jax.eval_shape(est.sample, params, jax.random.key(5), CONTEXT)
    assert s_shape.shape == (Y_DIM,) and s_shape.dtype == jnp.float32

    ys = jax.random.normal(jax.random.key(4), (7, Y_DIM), jnp.float32)
    log_prob = jax.jit(est.log_prob)
    loop = np.array([log_prob(params, y, CONTEXT) for y in ys])
    batched = case.log_prob_batch(params, ys, CONTEXT)
    assert batched.shape == (7,) and batched.dtype == jnp.float32
    np.testing.assert_allclose(batched, loop, rtol=1e-5, atol=1e-6)

    keys = jax.random.split(jax.random.key(5), 2)
    s = case.sample_batch(params, jnp.stack([keys[0], keys[0], keys[1]]), CONTEXT)
    np.testing.assert_array_equal(s[0], s[1])
    assert not np.allclose(s[0], s[2])


def test_other_event_dims(case):
    # y_dim == 1 for every estimator (nothing to couple on); an odd y_dim only changes how
    # coupling layers split the event, so it is checked for those alone (compile time).
    coupling = case.spec["name"] == "realnvp" or case.spec["config"].get("variant") == "coupling"
    for y_dim in (1, 3) if coupling else (1,):
        est = case.est
        params = est.init(jax.random.key(0), jnp.zeros(y_dim), jnp.zeros(C_DIM))
        params = {**params, "net": _perturb(jax.random.key(1), params["net"])}

        @jax.jit
        def draw_and_score(params, keys, est=est):
            s = jax.vmap(est.sample, in_axes=(None, 0, None))(params, keys, CONTEXT)
            return s, jax.vmap(est.log_prob, in_axes=(None, 0, None))(params, s, CONTEXT)

        s, lp = draw_and_score(params, jax.random.split(jax.random.key(7), 5))
        assert s.shape == (5, y_dim) and s.dtype == jnp.float32
        assert lp.shape == (5,) and np.all(np.isfinite(lp))


def test_build_round_trip(case):
    spec = case.est.spec
    assert spec["name"] == case.spec["name"]
    assert case.spec["config"].items() <= spec["config"].items()  # defaults are filled in
    rebuilt = E.build(json.loads(json.dumps(spec)))
    assert rebuilt.spec == spec
    y = GRID[12345]
    np.testing.assert_array_equal(
        rebuilt.log_prob(case.params, y, CONTEXT), case.est.log_prob(case.params, y, CONTEXT)
    )


def test_on_support_box_prior(case):
    low, high = np.array([-1.0, 0.0]), np.array([2.0, 0.5])
    prior = uniform(low, high)
    est = E.on_support(case.est, support_bijector(prior))
    params = est.init(
        jax.random.key(0), jnp.asarray((low + high) / 2, jnp.float32), jnp.zeros(C_DIM)
    )
    params = {**params, "net": case.params["net"]}
    n = 200
    h = (high - low) / n
    axes = [low[i] + h[i] * (np.arange(n) + 0.5) for i in range(2)]
    grid = jnp.asarray(np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2), jnp.float32)
    outside = jnp.array([[2.5, 0.25], [0.0, -0.1]], jnp.float32)

    @jax.jit
    def draw_and_score(params, keys, points):
        s = jax.vmap(est.sample, in_axes=(None, 0, None))(params, keys, CONTEXT)
        return s, jax.vmap(est.log_prob, in_axes=(None, 0, None))(params, points, CONTEXT)

    s, lp = draw_and_score(
        params, jax.random.split(jax.random.key(8), 1000), jnp.concatenate([grid, outside])
    )
    assert bool(jnp.all(prior.support(s)))
    density = np.exp(np.asarray(lp[: n * n], np.float64))
    assert np.all(np.isfinite(density))
    np.testing.assert_allclose(density.sum() * h.prod(), 1.0, rtol=2e-2)
    assert np.all(np.isneginf(lp[n * n :]))


def test_mdn_gradient_is_finite():
    est = E.build(CASES["mdn"])
    y = jax.random.normal(jax.random.key(9), (64, Y_DIM))
    c = jax.random.normal(jax.random.key(10), (64, C_DIM))
    params = est.init(jax.random.key(0), y, c)

    def loss(net):
        p = {**params, "net": net}
        return -jnp.mean(jax.vmap(est.log_prob, in_axes=(None, 0, 0))(p, y, c))

    value, grads = jax.jit(jax.value_and_grad(loss))(params["net"])
    assert np.isfinite(value)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert any(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("name", ["mdn", "realnvp"])
def test_bad_config_raises(name):
    with pytest.raises(ValueError, match="Expected"):
        E.build({"name": name, "config": {"hidden": 0}})
    with pytest.raises(ValueError, match="Expected"):
        E.build({"name": name, "config": {"activation": "swish"}})
