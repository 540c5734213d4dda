# Sourced by scripts/run.sh and scripts/train_embedded.sh: preload tcmalloc when the machine has it.
# PyTorch keeps no cache of CPU memory: under glibc's malloc every activation over its mmap threshold (32 MB at most)
# is a fresh mmap whose pages the kernel faults in and zeroes, step after step. The video judge's training step pays
# ~370 000 page faults and about as much system time as arithmetic; under tcmalloc it runs 2× faster, with the same
# numbers (benchmarks/bench_allocator.py). Debian: apt-get install libtcmalloc-minimal4. Opt out: REWORLD_MALLOC=system.
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
