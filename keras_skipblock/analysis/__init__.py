"""Analysis tools: feature-map variance statistics (paper Table 5) and the
paper's Figures 2 and 3 (matplotlib, imported lazily)."""

from keras_skipblock.analysis.variance import (
    DEFAULT_LAYERS,
    LayerVariance,
    VarianceTable,
    conv_layers,
    feature_variances,
    resolve_layers,
    table5_markdown,
)
from keras_skipblock.analysis.figures import (
    loss_curve,
    plot_bias_function,
    plot_loss_vs_probability,
    z_curve,
)
