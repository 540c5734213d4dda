# Source before training or running the video judge on CPU (`. scripts/cpu_allocator.sh`; scripts/train_embedded.sh
# and the test command do):
# preloads tcmalloc when the machine has it (Debian: apt-get install libtcmalloc-minimal4).
# PyTorch keeps no cache of CPU memory: under glibc's malloc every activation over its mmap threshold (32 MB at most)
# is a fresh mmap whose pages the kernel faults in and zeroes, step after step. The judge's training step (336 frames
# a batch, every early feature map 50–90 MB) pays ~400 000 page faults and about as much system time as arithmetic;
# under tcmalloc it takes 0.51× the time, with the same numbers (its validation on 366 clips: 43 s instead of 70).
# The VAE and Video DiT steps of configs/world4s.yaml fault little and gain nothing (1.00×, 1.04×):
# benchmarks/bench_allocator.py. Opt out: REWORLD_MALLOC=system.
if [ "${REWORLD_MALLOC:-tcmalloc}" != system ] && [[ "${LD_PRELOAD:-}" != *tcmalloc* ]]; then
  for _lib in /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 \
              /usr/lib64/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4; do
    if [ -f "$_lib" ]; then
      export LD_PRELOAD="$_lib${LD_PRELOAD:+:$LD_PRELOAD}"
      export TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=${TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD:-68719476736}
      break
    fi
  done
  unset _lib
fi
