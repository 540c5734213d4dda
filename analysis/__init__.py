"""ReWorld analysis toolkit, built on the public `reworld` API only.

- `analysis.velocity`: intermediate (head) vs final velocity of the Video DiT per denoising step and
  block, decoded x0 previews per layer, guided vs unguided latent paths.
- `analysis.representations`: Action DiT features of experts and hard negatives, UMAP (cached on disk),
  separation metrics that do not depend on UMAP (silhouette, k-NN, linear-probe AUC).
- `analysis.ablation`: training-curve and metric-table CSVs, overlays, steps to reach a target.
- `python -m analysis velocity|embedding|ablation …`: every figure to HTML, every number to JSON.

Nothing heavy is imported here: umap, sklearn and torch load only when a function needs them.
"""
