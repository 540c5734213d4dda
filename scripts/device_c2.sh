#!/bin/bash
# C2 seeds 1-4 on the device (docs/study.md amendment 12), run by the device tool from the repo root:
#   DEADLINE_S=545 WORKERS=10 bash scripts/device_c2.sh      carry: .whl (cp312 wheels: diffusers, nuscenes-devkit
#   and its pure-Python needs, shapely, pycocotools) and .c2dev (ref from scripts/world_fingerprint.py ... write)
# The tree must be under 64 MiB: take assets/checkpoints/vanilla/*/diffusion_pytorch_model.safetensors out of the
# index for the call (the study needs only that folder's VAE pointer and video_dit/config.json). DEADLINE_S: seconds
# from now to stop launching and bundle; what finished is in $OUT/c2_scores.tar (+ .json status).
T0=$(date +%s); DEADLINE=$((T0 + ${DEADLINE_S:-560}))
export NVIDIA_TF32_OVERRIDE=0 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
{
python3 -c "import diffusers, nuscenes" 2>/dev/null || pip install --no-deps -q .whl/*.whl
python3 -c "import torch, numpy, PIL, diffusers, cv2
print('torch', torch.__version__, torch.cuda.get_device_name(), 'numpy', numpy.__version__, 'PIL', PIL.__version__,
      'diffusers', diffusers.__version__, 'cv2', cv2.__version__)"
[ -f data/synth/synth_meta.json ] || python3 -m reworld synth --out data/synth --scenes 24 --seed 0 > /dev/null
python3 scripts/world_fingerprint.py data/synth check .c2dev/ref | tee $OUT/synth_check.json
echo "setup $(( $(date +%s) - T0 )) s"
} >> $OUT/setup.log 2>&1
python3 scripts/study_c2_parallel.py --out runs/c2-gpu --results runs/c2-gpu/results --seeds 1 2 3 4 \
  --workers ${WORKERS:-10} --deadline $DEADLINE --margin ${MARGIN:-40} --bundle $OUT/c2_scores.tar \
  >> $OUT/driver.log 2>&1
rm -rf /tmp/lt; mkdir -p /tmp/lt
for f in runs/c2-gpu/logs/*.log; do tr '\r' '\n' < "$f" | tail -40 > /tmp/lt/"$(basename "$f")"; done
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv >> $OUT/setup.log 2>&1
tar czf $OUT/logs_tail.tgz -C /tmp/lt .
echo "total $(( $(date +%s) - T0 )) s" >> $OUT/setup.log
tail -5 $OUT/driver.log
