#!/usr/bin/env bash
# The world4s checkpoints (issue 16: 1 s of context, 4 s of future at 4 Hz): `reworld` (configs/world4s.yaml) and
# `vanilla` (configs/world4s-vanilla.yaml: every ReWorld loss off). Same world, VAE, seed and budget; they differ only
# in their config's `loss` section. The VAE is the shipped assets/checkpoints/world4s_vae (its card has its command).
# Video stages one after the other on both cores (about 38 min each); the planner stages side by side, one thread
# each. Run folders under $RUNS (default runs/); shipped to assets/checkpoints/{reworld,vanilla} with their cards
# (the judge reads one val clip in 3, 2 sampled futures each).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs}
VAE=assets/checkpoints/world4s_vae
grep -q '"generator": "synth-1.1"' data/synth/synth_meta.json 2>/dev/null || \
  $PY -m reworld synth --out data/synth --scenes 24 --seed 0
for arm in reworld vanilla; do
  cfg=configs/world4s.yaml; [ $arm = vanilla ] && cfg=configs/world4s-vanilla.yaml
  [ -d $RUNS/w4s-$arm/video_dit ] || \
    $PY -m reworld train --stage video --config $cfg --out $RUNS/w4s-$arm --vae $VAE
done
export OMP_NUM_THREADS=1
for stage in action joint; do
  $PY -m reworld train --stage $stage --config configs/world4s.yaml --out $RUNS/w4s-reworld &
  $PY -m reworld train --stage $stage --config configs/world4s-vanilla.yaml --out $RUNS/w4s-vanilla &
  wait
done
unset OMP_NUM_THREADS
cat > $RUNS/w4s-commands.txt <<CMDS
python -m reworld synth --out data/synth --scenes 24 --seed 0
python -m reworld train --stage video --config configs/world4s.yaml --out runs/w4s-reworld --vae $VAE
python -m reworld train --stage video --config configs/world4s-vanilla.yaml --out runs/w4s-vanilla --vae $VAE
export OMP_NUM_THREADS=1
python -m reworld train --stage action --config configs/world4s.yaml --out runs/w4s-reworld &
python -m reworld train --stage action --config configs/world4s-vanilla.yaml --out runs/w4s-vanilla &
wait
python -m reworld train --stage joint --config configs/world4s.yaml --out runs/w4s-reworld &
python -m reworld train --stage joint --config configs/world4s-vanilla.yaml --out runs/w4s-vanilla &
wait
# all of it: bash scripts/train_world4s.sh
CMDS
for arm in reworld vanilla; do
  cfg=configs/world4s.yaml; [ $arm = vanilla ] && cfg=configs/world4s-vanilla.yaml
  $PY -m reworld ship --run $RUNS/w4s-$arm --to assets/checkpoints/$arm --config $cfg \
    --shared-vae $VAE --commands $RUNS/w4s-commands.txt --judge-every 3 --judge-samples 2
done
