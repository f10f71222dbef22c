"""Embedding networks (ilijax.nn.embeddings) and estimators trained jointly with them.

Known answers: FCN's last layer is linear; CNN feature-map sizes and accepted ranks; DeepSet
and GNN invariance to the order of points (and GNN to translations); the radius graph against a
numpy brute force; the raw-x statistics; an NPE with an embedding of 8 x 8 maps learns the exact
linear-Gaussian posterior; save/load gives identical log-densities. The two-stage training of
shared embeddings and NRE's plumbing are checked with a recording stand-in for ``fit``.
Everything is tiny: one training run in the file, since compiling one costs 10-20 s on CPU.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ilijax
from ilijax.estimators import Frozen, classifier, embedded, mdn
from ilijax.nn import CNN1D, CNN2D, FCN, GNN, DeepSet, build_embedding, embedding_spec, radius_graph

KEY = jax.random.key(0)


# Random params are drawn with numpy from the shapes (jax.eval_shape): compiling flax's random
# initialisers costs seconds per network on CPU, and these tests need only some fixed weights.


def _params(net, *args):
    init = net.init if hasattr(net, "init") else net
    shapes = jax.eval_shape(init, KEY, *args)
    rng = np.random.default_rng(0)

    def draw(s):
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 100
        return jnp.asarray(rng.normal(0.0, 1.0 / np.sqrt(fan_in), s.shape), s.dtype)

    return jax.tree.map(draw, shapes)


def _init_apply(net, x):
    params = _params(net, x)
    return params, jax.jit(net.apply)(params, x)


def test_fcn_flattens_and_has_no_last_activation():
    net = FCN(n_hidden=(8, 3), act_fn="SiLU")  # ltu-ili's torch spelling works
    x = jax.random.normal(KEY, (4, 5))
    params, out = _init_apply(net, x)
    p = params["params"]
    h = jax.nn.silu(x.reshape(-1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    expected = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]  # linear output layer
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert out.shape == (3,) and np.any(np.asarray(out) < 0)


# (network, event shape, flattened feature map entering the dense head)
@pytest.mark.parametrize(("net", "shape", "flat"), [
    # 33 -> pool 16 -> pool 8, 6 channels
    (CNN1D(out_features=5, channels=(4, 6), hidden=(8,)), (33,), 8 * 6),
    # stride 2: 32 -> 16 -> avg pool 8, 4 channels
    (CNN1D(out_features=5, channels=(4,), kernel_size=[3], stride=2, pool="avg"), (32, 3), 8 * 4),
    # no pooling, 'SAME' padding: 9 x 7, 4 channels
    (CNN2D(out_features=3, channels=(4, 4), pool="none", hidden=()), (9, 7), 9 * 7 * 4),
    # 8 x 8 -> pool 4 x 4, 4 channels
    (CNN2D(out_features=3, channels=(4,), kernel_size=5), (8, 8, 2), 4 * 4 * 4),
])
def test_cnn_output_shapes(net, shape, flat):
    x = jnp.ones(shape)
    params = jax.eval_shape(net.init, KEY, x)
    assert jax.eval_shape(net.apply, params, x).shape == (net.out_features,)
    assert params["params"]["Dense_0"]["kernel"].shape[0] == flat


@pytest.mark.parametrize(("net", "shape", "expected"), [
    (CNN1D(), (4, 4, 4), r"\(L,\) or \(L, C\) for the CNN1D embedding; got x event shape "
                         r"\(4, 4, 4\)"),
    (CNN2D(), (16,), r"\(H, W\) or \(H, W, C\) for the CNN2D embedding; got x event shape "
                     r"\(16,\)"),
    (DeepSet(), (16,), r"\(N, F\) for the DeepSet embedding; got x event shape \(16,\)"),
    (GNN(pos_dims=3), (10, 2), r"F >= pos_dims for the GNN embedding; got x event shape "
                               r"\(10, 2\)"),
])
def test_wrong_event_rank_is_a_value_error(net, shape, expected):
    with pytest.raises(ValueError, match=expected):
        jax.eval_shape(net.init, KEY, jnp.ones(shape))


def test_bad_configuration_is_a_value_error():
    with pytest.raises(ValueError, match="FCN: expected n_hidden to be a non-empty list"):
        FCN(n_hidden=())
    with pytest.raises(ValueError, match="expected pooling in"):
        DeepSet(pooling="median")
    with pytest.raises(ValueError, match="kernel_size to be a positive int or a list of 2"):
        CNN1D(channels=(4, 4), kernel_size=(3,))
    with pytest.raises(ValueError, match="Expected activation in"):
        FCN(act_fn="swish2")
    with pytest.raises(ValueError, match=r"Unknown GNN option\(s\) \['radious'\]"):
        build_embedding({"name": "gnn", "config": {"radious": 1.0}})


@pytest.mark.parametrize("net", [FCN(n_hidden=(4, 2)), CNN1D(channels=(2,)), DeepSet(phi=(4,)),
                                 GNN(radius=0.5, box_size=2.0, readout=[4])])
def test_spec_round_trip_is_json(net):
    spec = json.loads(json.dumps(embedding_spec(net)))
    assert build_embedding(spec) == net


@pytest.mark.parametrize("pooling", ["mean", "sum", "max"])
def test_deepset_is_permutation_invariant_and_ignores_padding(pooling):
    net = DeepSet(out_features=4, phi=(16, 16), rho=(8,), pooling=pooling, mask_zeros=True)
    pts = jax.random.normal(KEY, (12, 3))
    perm = jax.random.permutation(jax.random.key(1), 12)
    params, out = _init_apply(net, pts)
    apply = jax.jit(net.apply)
    out_perm = apply(params, pts[perm])
    if pooling == "max":  # no summation: bit-exact
        np.testing.assert_array_equal(out, out_perm)
    else:  # float32 sums in another order
        np.testing.assert_allclose(out, out_perm, rtol=1e-5, atol=1e-6)
    padded = jnp.concatenate([pts[:7], jnp.zeros((5, 3))])[jax.random.permutation(KEY, 12)]
    np.testing.assert_allclose(apply(params, padded), apply(params, pts[:7]),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(apply(params, pts[:7]), out, atol=1e-3)  # the set matters


def _brute_force_graph(pos, radius, box=None):
    n = len(pos)
    adj = np.zeros((n, n), bool)
    for i in range(n):
        for j in range(n):
            d = pos[i] - pos[j]
            if box is not None:
                d = d - box * np.round(d / box)
            adj[i, j] = i != j and np.sqrt(np.sum(d**2)) < radius
    return adj


@pytest.mark.parametrize("box", [None, 1.0])
def test_radius_graph_matches_brute_force(box):
    pos = np.asarray(jax.random.uniform(KEY, (40, 3)), np.float64)
    got = np.asarray(radius_graph(jnp.asarray(pos), 0.3, box_size=box))
    expected = _brute_force_graph(pos, 0.3, box)
    np.testing.assert_array_equal(got, expected)
    assert 0 < expected.sum() < 40 * 39  # neither empty nor complete
    if box is not None:  # periodic images add edges across the faces
        assert expected.sum() > _brute_force_graph(pos, 0.3).sum()
    mask = np.arange(40) < 30
    masked = np.asarray(radius_graph(jnp.asarray(pos), 0.3, box_size=box, mask=jnp.asarray(mask)))
    np.testing.assert_array_equal(masked, expected & mask[:, None] & mask[None, :])


def test_gnn_invariances():
    net = GNN(out_features=4, radius=0.4, pos_dims=2, hidden=8, layers=2, readout=(8,))
    k1, k2 = jax.random.split(KEY)
    cloud = jnp.concatenate([jax.random.uniform(k1, (20, 2)), jax.random.normal(k2, (20, 1))], 1)
    params, out = _init_apply(net, cloud)
    apply = jax.jit(net.apply)
    perm = jax.random.permutation(jax.random.key(3), 20)
    np.testing.assert_allclose(apply(params, cloud[perm]), out, rtol=1e-5, atol=1e-5)
    shifted = cloud.at[:, :2].add(jnp.array([5.0, -3.0]))
    np.testing.assert_allclose(apply(params, shifted), out, rtol=1e-4, atol=1e-5)
    # Moving one point out of everyone's reach changes the graph, hence the output.
    far = cloud.at[0, :2].set(jnp.array([10.0, 10.0]))
    assert not np.allclose(apply(params, far), out, atol=1e-4)
    # With the positions as node features, translations are seen.
    net_pos = GNN(out_features=4, radius=0.4, pos_dims=2, hidden=4, layers=1, readout=(),
                  position_features=True)
    p2, o2 = _init_apply(net_pos, cloud)
    assert not np.allclose(jax.jit(net_pos.apply)(p2, shifted), o2, atol=1e-3)


# ----------------------------------------------------------------------------- the wrapper


def test_embedded_bundle_contract_and_errors():
    est = embedded(mdn(hidden=4, components=1, layers=1), FCN(n_hidden=(3,)))
    theta = jax.random.normal(KEY, (50, 2))
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(1), (50, 4, 4))
    params = jax.jit(est.init)(KEY, theta, x)
    np.testing.assert_allclose(params["x_shift"].value, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(params["x_scale"].value, x.std(0), rtol=1e-5)
    # The inner context standardization is the identity (embedding outputs move).
    np.testing.assert_array_equal(params["estimator"]["c_shift"].value, np.zeros(3))
    np.testing.assert_array_equal(params["estimator"]["c_scale"].value, np.ones(3))
    np.testing.assert_allclose(params["estimator"]["y_shift"].value, theta.mean(0), rtol=1e-5)

    def check(p, t, xx, key):
        lp = jax.vmap(est.log_prob, in_axes=(None, 0, 0))(p, t, xx)
        # No gradient may reach the standardization statistics.
        grads = jax.grad(lambda q: est.log_prob(q, t[0], xx[0]))(p)
        return lp, est.sample(p, key, xx[0]), grads

    lp, draw, grads = jax.jit(check)(params, theta, x, KEY)
    assert lp.shape == (50,) and np.all(np.isfinite(lp)) and draw.shape == (2,)
    for k in ("x_shift", "x_scale"):
        np.testing.assert_array_equal(grads[k].value, 0.0)
    for k in ("c_shift", "c_scale"):
        np.testing.assert_array_equal(grads["estimator"][k].value, 0.0)
    assert np.any(np.asarray(grads["embedding"]["params"]["Dense_0"]["kernel"]) != 0)
    with pytest.raises(ValueError, match=r"Expected one x event of shape \(4, 4\) .*; got \(16,\)"):
        jax.eval_shape(est.log_prob, params, theta[0], x[0].reshape(-1))
    rebuilt = ilijax.estimators.build(json.loads(json.dumps(est.spec)))
    assert rebuilt.spec == est.spec
    assert jax.eval_shape(rebuilt.log_prob, params, theta[0], x[0]).shape == ()
    with pytest.raises(ValueError, match="standardize in"):
        embedded(mdn(), FCN(), standardize="minmax")
    with pytest.raises(ValueError, match="Expected an estimator without an embedding"):
        embedded(est, FCN())


@pytest.mark.parametrize(("mode", "axes"), [("feature", (0, 1)), ("global", None),
                                            ("elementwise", 0), ("none", "none")])
def test_standardization_modes_skip_padding(mode, axes):
    pts = 2.0 + 3.0 * jax.random.normal(KEY, (30, 6, 2))
    pts = pts.at[:, 4:].set(0.0)  # two padding rows per set
    est = embedded(mdn(), DeepSet(mask_zeros=True), standardize=mode)
    shift, scale = jax.jit(est.embedding_parts.stats)(pts)
    assert shift.shape == scale.shape == (6, 2)
    real = np.asarray(pts[:, :4])
    if mode == "none":
        np.testing.assert_array_equal(shift, 0.0)
        np.testing.assert_array_equal(scale, 1.0)
    elif mode == "elementwise":  # per element: the padding rows have zero spread -> 1
        np.testing.assert_allclose(shift[:4], real.mean(0), rtol=1e-4)
        np.testing.assert_array_equal(scale[4:], 1.0)
    else:
        for row in range(6):  # the same statistics for every row: order does not matter
            np.testing.assert_allclose(shift[row], real.mean(axis=axes), rtol=1e-4)
            np.testing.assert_allclose(scale[row], real.std(axis=axes), rtol=1e-4)
    # GNN positions stay in data units.
    gnn = embedded(mdn(), GNN(pos_dims=1), standardize=mode if mode != "none" else "auto")
    g_shift, g_scale = jax.jit(gnn.embedding_parts.stats)(pts)
    np.testing.assert_array_equal(g_shift[:, 0], 0.0)
    np.testing.assert_array_equal(g_scale[:, 0], 1.0)
    assert np.all(np.asarray(g_scale[:4, 1]) > 2.0)


def test_nle_with_an_embedding_is_refused():
    est = embedded(mdn(), FCN(n_hidden=(8, 4)))
    prior = ilijax.priors.normal(jnp.zeros(1), jnp.ones(1))
    with pytest.raises(ValueError, match="without an embedding network for NLE"):
        ilijax.nle(KEY, jnp.zeros((20, 1)), jnp.zeros((20, 8, 8)), prior=prior, estimator=est)


def test_check_data_keeps_maps_and_drops_non_finite_rows():
    x = np.ones((20, 4, 4), np.float32)
    x[3, 2, 1] = np.nan
    with pytest.warns(UserWarning, match="dropped 1 of 20 rows"):
        data = ilijax.data.check_data(np.zeros((20, 1)), x)
    assert data.x.shape == (19, 4, 4) and data.theta.shape == (19, 1)


def test_sequential_refuses_a_shared_embedding():
    est = embedded(mdn(), FCN(n_hidden=(4,)), share_embedding=True)
    with pytest.raises(ValueError, match="share_embedding=False for sequential NPE"):
        ilijax.sequential(KEY, lambda k, t: t, PRIOR, jnp.zeros(1), estimator=est, ensemble=2)


def test_structured_x_needs_an_embedding():
    prior = ilijax.priors.normal(jnp.zeros(1), jnp.ones(1))
    with pytest.raises(ValueError, match="use an embedding network"):
        ilijax.npe(KEY, jnp.zeros((20, 1)), jnp.zeros((20, 4, 4)), prior=prior,
                   estimator=mdn(), progress=False)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\) for the CNN2D embedding"):
        ilijax.npe(KEY, jnp.zeros((20, 1)), jnp.zeros((20, 16)), prior=prior,
                   estimator=embedded(mdn(), CNN2D()), progress=False)


# ----------------------------------------------------------------------------- training

# A linear-Gaussian problem with an exact posterior: theta ~ N(0, 1), x = theta T + 0.5 eps with
# a fixed 8 x 8 template T (a Gaussian blob): a map whose amplitude is theta. The posterior is
# normal with precision 1 + |T|^2 / 0.5^2 and mean (T . x / 0.5^2) / precision.
SIGMA = 0.5
PRIOR = ilijax.priors.normal(jnp.zeros(1), jnp.ones(1))
_yy, _xx = jnp.meshgrid(jnp.arange(8.0), jnp.arange(8.0), indexing="ij")
BLOB = jnp.exp(-((_yy - 3.5) ** 2 + (_xx - 3.5) ** 2) / 8.0)
POST_SD = float((1.0 + jnp.sum(BLOB**2) / SIGMA**2) ** -0.5)
FIT = dict(max_epochs=100, patience=None, batch_size=64, learning_rate=2e-3, progress=False,
           shard=False)
NUM_TEST, NUM_DRAWS = 100, 500


def simulate_maps(key, n):
    k_theta, k_noise = jax.random.split(key)
    theta = jax.random.normal(k_theta, (n, 1))
    return theta, theta[:, :, None] * BLOB + SIGMA * jax.random.normal(k_noise, (n, 8, 8))


def exact_mean(x):
    return jnp.sum(x * BLOB, axis=(-2, -1)) / SIGMA**2 * POST_SD**2


@pytest.fixture(scope="module")
def maps_npe():
    """NPE with an FCN embedding of 8 x 8 maps, 2 members, each training its own embedding
    jointly with its estimator. The only training run of this file: compiling a training program
    costs 10-20 s on CPU (a CNN would also take 10x longer per step; its shapes are checked
    above and it trains through the same code)."""
    theta, x = simulate_maps(jax.random.key(10), 4000)
    est = embedded(mdn(hidden=16, components=1), FCN(n_hidden=(8, 4)))
    post, info = ilijax.npe(jax.random.key(11), theta, x, prior=PRIOR, estimator=est,
                            ensemble=2, **FIT)
    theta_t, x_t = simulate_maps(jax.random.key(12), NUM_TEST)
    draws = post.sample(jax.random.key(13), x_t, NUM_DRAWS)
    return post, info, theta_t, x_t, draws


@pytest.mark.slow
def test_members_learn_the_posterior(maps_npe):
    post, info, _, x_t, draws = maps_npe
    assert post.x_shape == (8, 8) and info.epochs.shape == (2,)
    # The held-out loss is -E log q(theta | x); for the exact posterior it is the entropy of
    # N(mean, POST_SD^2), 0.5 log(2 pi e POST_SD^2) = -0.55, and a member that ignored x would
    # score the prior's, 1.42. Allowed: 0.25 nats (3 standard errors on 400 validation rows are
    # 0.1; the rest is the small networks' own error after 100 epochs).
    entropy = 0.5 * np.log(2 * np.pi * np.e * POST_SD**2)
    np.testing.assert_array_less(np.abs(info.best_validation_loss - entropy), 0.25)
    d = np.asarray(draws)[..., 0]
    assert d.shape == (NUM_TEST, NUM_DRAWS)
    # Means within 0.5 posterior deviations (RMS over observations; Monte Carlo alone is
    # 1/sqrt(500) = 0.045; ignoring x gives about 8) and spreads within 25%.
    z = (d.mean(1) - np.asarray(exact_mean(x_t))) / POST_SD
    assert np.sqrt(np.mean(z**2)) < 0.5, z
    assert abs(np.mean(d.std(1)) / POST_SD - 1) < 0.25
    # Every member trained its own embedding.
    kernel = post.groups[0].params["embedding"]["params"]["Dense_0"]["kernel"]
    assert not np.allclose(kernel[0], kernel[1])


@pytest.mark.slow
def test_maps_flow_through_posterior_save_load_and_validate(maps_npe, tmp_path):
    post, _, theta_t, x_t, draws = maps_npe
    lp = post.log_prob(draws[:, :3], x_t)  # a batch of maps, 3 draws each
    assert lp.shape == (NUM_TEST, 3) and np.all(np.isfinite(lp))
    one = post.log_prob(draws[0, :3], x_t[0])  # one map: the same densities
    np.testing.assert_allclose(one, lp[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"x of shape \(8, 8\) or \(batch, 8, 8\); got \(64,\)"):
        post.sample(KEY, x_t[0].reshape(-1), 5)
    path = ilijax.save(post, tmp_path / "maps.npz")
    loaded = ilijax.load(path)
    assert loaded.x_shape == (8, 8) and loaded.groups[0].spec["name"] == "embedded"
    np.testing.assert_array_equal(loaded.log_prob(draws[:, :3], x_t), lp)
    # validate passes the maps through (same draws shape: the compiled sampler is reused).
    report = ilijax.validate(jax.random.key(14), post, theta_t, x_t, metrics=("sbc",),
                             num_samples=NUM_DRAWS, progress=False, out_dir=tmp_path / "val",
                             plots=False)
    assert report.samples.shape == draws.shape and report.sbc.ranks.shape == (NUM_TEST, 1)
    assert (tmp_path / "val" / "validation.nc").exists()


def test_files_without_x_shape_load(tmp_path):
    """Files written before ``x_shape`` existed hold only ``x_dim``; they load as vectors."""
    est = mdn(hidden=4, components=1, layers=1)
    bundle = ilijax.estimators.on_support(est, ilijax.priors.support_bijector(PRIOR))
    one = _params(lambda k, t, x: bundle.init(k, t, x), jnp.zeros(1), jnp.zeros(3))
    one = {**one, "y_scale": Frozen(jnp.ones(1)), "c_scale": Frozen(jnp.ones(3))}
    params = jax.tree.map(lambda a: jnp.stack([a, a + 0.1]), one)
    post = ilijax.Posterior([ilijax.posterior.Group(bundle, params, est.spec)], [0.5, 0.5],
                            PRIOR, x_dim=3)
    path = ilijax.save(post, tmp_path / "new.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    spec = json.loads(arrays["__spec__"].tobytes().decode())
    assert spec["x_shape"] == [3]
    del spec["x_shape"]
    arrays["__spec__"] = np.frombuffer(json.dumps(spec).encode(), np.uint8)
    old = tmp_path / "old.npz"
    with open(old, "wb") as f:
        np.savez(f, **arrays)
    loaded = ilijax.load(old)
    assert loaded.x_shape == (3,) and loaded.x_dim == 3
    theta, x = jnp.zeros((4, 1)), jnp.ones((4, 3))
    lp = post.log_prob(theta, x)
    assert np.all(np.isfinite(lp))
    np.testing.assert_array_equal(loaded.log_prob(theta, x), lp)


# ----------------------------------------------------------------------------- orchestration
# The two-stage training of share_embedding and NRE's plumbing, with ilijax.fit replaced by a
# recorder that returns the params unchanged: compiling a training program costs 10-20 s on
# CPU, and what is checked here is which data and params reach fit and what comes back.
# (Learning itself is checked by the NPE run above.)


class FitRecorder:
    def __init__(self):
        self.calls = []

    def __call__(self, key, params, losses, train, val, **options):
        self.calls.append(dict(params=params, train=train, val=val, options=options))
        sizes = [jax.tree.leaves(p)[0].shape[0] for p in params]
        for p, loss in zip(params, losses, strict=True):  # each loss traces on its data
            batch = jax.tree.map(lambda a: a[:12], train)
            member = jax.tree.map(lambda a: a[0], p)
            assert jax.eval_shape(loss, member, batch, key).shape == ()
        k = sum(sizes)
        values = dict(train_loss=np.zeros((1, k)), validation_loss=np.zeros((1, k)),
                      best_validation_loss=np.zeros(k), best_epoch=np.ones(k, int),
                      epochs=np.ones(k, int), diverged=np.zeros(k, bool),
                      group=np.repeat(np.arange(len(sizes)), sizes), compile_time=0.0,
                      train_time=0.0, epoch_traces=1, sharded=(False,) * len(sizes))
        info = ilijax.FitInfo(**{f: values[f] for f in ilijax.FitInfo._fields if f in values})
        return params, info


@pytest.fixture
def recorder(monkeypatch):
    rec = FitRecorder()
    monkeypatch.setattr(ilijax.inference._members, "fit", rec)
    return rec


def test_share_embedding_trains_in_two_stages(recorder):
    theta, x = simulate_maps(jax.random.key(40), 200)
    shared = embedded(mdn(hidden=4, components=1),
                      CNN2D(out_features=3, channels=(2,), hidden=()), share_embedding=True)
    own = embedded(mdn(hidden=4, components=1), FCN(n_hidden=(5,)))
    hook = lambda state: None  # noqa: E731
    post, _ = ilijax.npe(KEY, theta, x, prior=PRIOR, estimator=[own, shared], ensemble=3,
                         progress=False, on_checkpoint=hook)
    first, second = recorder.calls
    # Stage 1: one member of the shared group, embedding and estimator on the raw maps; the
    # checkpoint options belong to the run of stage 2.
    assert len(first["params"]) == 1 and first["train"].x.shape[1:] == (8, 8)
    assert jax.tree.leaves(first["params"][0])[0].shape[0] == 1
    assert "on_checkpoint" not in first["options"]
    assert second["options"]["on_checkpoint"] is hook
    # Stage 2: the unshared group on the raw maps, the shared group's heads on the summaries
    # of the frozen embedding (computed with the stage-1 member).
    stage1 = jax.tree.map(lambda a: a[0], first["params"][0])
    parts = shared.embedding_parts
    train2 = second["train"]
    assert sorted(train2) == ["s1", "theta", "x"]
    s1 = jax.jit(jax.vmap(parts.embed, in_axes=(None, 0)))(stage1, train2["x"])
    np.testing.assert_allclose(train2["s1"], s1, rtol=1e-5, atol=1e-6)
    heads = second["params"][1]
    assert jax.tree.leaves(heads)[0].shape[0] == 3 and "embedding" not in heads
    np.testing.assert_allclose(heads["c_shift"].value[0], s1.mean(0), rtol=1e-4, atol=1e-5)
    # The posterior's members: the stage-1 embedding thrice, each with its own head.
    members = post.groups[1].params
    for name in ("embedding", "x_shift", "x_scale"):
        for got, want in zip(jax.tree.leaves(members[name]), jax.tree.leaves(stage1[name]),
                             strict=True):
            np.testing.assert_array_equal(got, np.broadcast_to(want, got.shape))
    assert not np.allclose(members["estimator"]["net"]["params"]["MLP_0"]["Dense_0"]["kernel"][0],
                           members["estimator"]["net"]["params"]["MLP_0"]["Dense_0"]["kernel"][1])
    own_kernel = post.groups[0].params["embedding"]["params"]["Dense_0"]["kernel"]
    assert not np.allclose(own_kernel[0], own_kernel[1])  # unshared: one embedding each
    assert post.x_shape == (8, 8) and post.num_members == 6


def test_nre_with_an_embedded_classifier(recorder):
    # Sets of 16 points (a value and a noise feature).
    k_t, k_v = jax.random.split(jax.random.key(30))
    theta = jax.random.normal(k_t, (200, 1))
    x = jnp.stack([theta + jax.random.normal(k_v, (200, 16)), jnp.zeros((200, 16))], axis=-1)
    clf = embedded(classifier(hidden=8), DeepSet(out_features=3, phi=(8,), rho=()))
    assert isinstance(clf, ilijax.estimators.Classifier)
    post, _ = ilijax.nre(KEY, theta, x, prior=PRIOR, classifier=clf, ensemble=2, progress=False)
    assert post.method == "nre" and post.x_shape == (16, 2)
    (call,) = recorder.calls
    assert call["train"].x.shape[1:] == (16, 2)
    params = post.groups[0].params
    assert not np.allclose(params["embedding"]["params"]["Dense_0"]["kernel"][0],
                           params["embedding"]["params"]["Dense_0"]["kernel"][1])
    # The member term is the inner classifier's logit on the summaries, plus the log prior.
    member = jax.tree.map(lambda a: a[0], params)
    inner = clf.embedding_parts.inner

    def direct(t, xx):
        s = clf.embedding_parts.embed(member, xx)
        return inner.log_ratio(member["estimator"], t, s)

    got = post.member_log_prob(theta[0], x[0])[0]
    np.testing.assert_allclose(got, jax.jit(direct)(theta[0], x[0]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"x of shape \(16, 2\) or \(batch, 16, 2\)"):
        post.log_prob(theta[0], x[0, :8])
