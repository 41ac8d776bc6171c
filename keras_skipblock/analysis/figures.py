"""The paper's Figures 2 and 3, computed with the library's own Bias Loss.

Figure 2: the weight z(v) = exp(alpha*v) - beta over the scaled variance
v in [0, 1] for several (alpha, beta), with and without the [0.5, 1.5] clamp.
Figure 3: loss against the softmax probability, cross-entropy vs Bias Loss
at a few scaled variances, for (a) correct and (b) incorrect predictions.

Nothing here re-derives the loss: the curves are evaluated by
`keras_skipblock.bias_weights` and `keras_skipblock.BiasLoss.per_sample`
on synthetic batches whose per-sample variances scale to exactly the wanted
v (see `_features_for`), so the plots show what the training code computes,
clamp included.

Matplotlib is imported lazily with the non-interactive "Agg" backend.
"""

import numpy as np

from keras_skipblock.losses import BiasLoss, bias_weights

DEFAULT_PARAMS = ((0.3, 0.3), (0.5, 0.3), (1.0, 0.3), (0.3, 0.1), (0.3, 0.5), (2.0, 0.5))
DEFAULT_VARIANCES = (0.0, 0.5, 1.0)


def _features_for(v):
    """A (len(v)+2, 2) feature batch whose batch-scaled variances are v.

    Row [a, -a] has unbiased variance 2a^2, so a = sqrt(v/2) gives variance v.
    Two anchor rows with variances 0 and 1 are appended so that the batch's
    min and max are 0 and 1 and "batch" scaling maps each v to itself.
    """
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    if np.any(v < 0) or np.any(v > 1):
        raise ValueError("scaled variances must lie in [0, 1].")
    a = np.sqrt(np.concatenate([v, [0.0, 1.0]]) / 2.0)
    return np.stack([a, -a], axis=1).astype("float32")


def z_curve(v, alpha=0.3, beta=0.3, clamp=(0.5, 1.5)):
    """z(v) at scaled variances `v` (array in [0, 1]), via `bias_weights`."""
    weights = bias_weights(_features_for(v), alpha=alpha, beta=beta, clamp=clamp).weights
    return np.asarray(weights)[:-2]


def loss_curve(p, v=None, correct=True, alpha=0.3, beta=0.3, clamp=(0.5, 1.5)):
    """Loss of one sample as a function of the softmax probability `p`.

    A two-class view: for a correct prediction `p` is the probability given to
    the true class (loss = -z log p); for an incorrect one, `p` is the
    confidence of the wrong predicted class and the true class gets 1 - p
    (loss = -z log(1 - p)). `v=None` gives plain cross-entropy (z = 1);
    otherwise `v` is the sample's scaled variance and the loss is
    `BiasLoss.per_sample` with (alpha, beta, clamp).
    """
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    true_p = p if correct else 1.0 - p
    true_p = np.clip(true_p, 1e-7, 1 - 1e-7)
    logits = np.stack([np.log(true_p), np.log1p(-true_p)], axis=1).astype("float32")
    labels = np.zeros(len(p), dtype="int32")
    if v is None:
        return np.asarray(BiasLoss().crossentropy(labels, logits))
    loss = BiasLoss(alpha=alpha, beta=beta, clamp=clamp)
    features = _features_for(np.full(len(p), float(v)))
    # Anchor rows (last two) get dummy labels/logits and are dropped.
    logits = np.concatenate([logits, np.zeros((2, 2), "float32")])
    labels = np.concatenate([labels, np.zeros(2, "int32")])
    values, _ = loss.per_sample(labels, logits, features)
    return np.asarray(values)[:-2]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_bias_function(path, params=DEFAULT_PARAMS, clamp=(0.5, 1.5), size=(6.4, 4.0), dpi=100):
    """Figure 2: z(v) for several (alpha, beta); dashed: unclamped, solid: clamped.

    Writes a PNG of size*dpi pixels to `path` and returns `path`.
    """
    plt = _pyplot()
    v = np.linspace(0.0, 1.0, 101)
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    for alpha, beta in params:
        raw = z_curve(v, alpha, beta, clamp=None) if beta < 1 else np.exp(alpha * v) - beta
        line = ax.plot(v, raw, "--", linewidth=1, alpha=0.6)[0]
        if clamp is not None:
            ax.plot(v, z_curve(v, alpha, beta, clamp), "-", color=line.get_color(),
                    linewidth=2, label=f"α={alpha}, β={beta}")
        else:
            line.set_label(f"α={alpha}, β={beta}")
    if clamp is not None:
        for bound in clamp:
            ax.axhline(bound, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("scaled variance v")
    ax.set_ylabel("z(v) = exp(αv) − β")
    title = "Bias function z(v)"
    if clamp is not None:
        title += f" (solid: clamped to [{clamp[0]}, {clamp[1]}]; dashed: unclamped)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_loss_vs_probability(path, variances=DEFAULT_VARIANCES, alpha=0.3, beta=0.3,
                             clamp=(0.5, 1.5), size=(10.0, 4.0), dpi=100):
    """Figure 3: loss vs softmax probability, (a) correct, (b) incorrect.

    Cross-entropy and Bias Loss at each scaled variance in `variances`.
    Writes a PNG of size*dpi pixels to `path` and returns `path`.
    """
    plt = _pyplot()
    p = np.linspace(0.01, 0.99, 99)
    fig, axes = plt.subplots(1, 2, figsize=size, dpi=dpi)
    for ax, correct in zip(axes, (True, False)):
        ax.plot(p, loss_curve(p, None, correct), "k-", linewidth=2, label="$L_{ce}$")
        for v in variances:
            ax.plot(p, loss_curve(p, v, correct, alpha, beta, clamp), "--",
                    label=f"$L_{{bias}}$, v={v:g}")
        ax.set_xlabel("probability of the true class" if correct
                      else "probability of the (wrong) predicted class")
        ax.set_ylabel("loss")
        ax.set_title(("(a) correct" if correct else "(b) incorrect")
                     + f" predictions, α={alpha}, β={beta}", fontsize=9)
        ax.set_ylim(0, 5)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
