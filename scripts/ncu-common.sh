# Shared by scripts/ncu-clock and scripts/ncu-stalls (sourced, from the repository root): one
# ncu profile of the 5th main-kernel launch, of a benchmark build or of a FlashMLA reference.
scripts/fmla-lib >/dev/null  # unpacks .fmla/upstream.tgz when carried
[ -f build-pack/bins.tgz ] && mkdir -p build-run && tar -C build-run -xzf build-pack/bins.tgz

# ncu_ours CASE NAME METRICS: build-run/bench_NAME's pair kernel on CASE; ncu's text on stdout.
# NAME:VAR=VALUE[,VAR2=VALUE2] runs bench_NAME with those environment variables (as ab-bench).
ncu_ours() {
  local bin=${2%%:*} setting=
  [ "$bin" != "$2" ] && setting=${2#*:}
  env ${setting//,/ } FLASHMLA_BENCH_CASES=$1 timeout 300 ncu --clock-control none \
    -k regex:pair_kernel --launch-skip 4 --launch-count 1 --metrics "$3" "build-run/bench_$bin" \
    --gpu-only 2>&1
}

# ncu_fmla CASE LIB BENCH METRICS: FlashMLA (LIB, as time_flashmla.py --lib) on the shapes and
# lengths of CASE, written to .fmla/cases-<case>.txt by build-run/bench_BENCH when missing.
ncu_fmla() {
  local lc
  lc=$(echo "$1" | tr 'A-Z' 'a-z')
  if [ ! -f ".fmla/cases-$lc.txt" ]; then
    FLASHMLA_BENCH_CASES=$1 FLASHMLA_BENCH_CASES_FILE=".fmla/cases-$lc.txt" \
      "build-run/bench_${3%%:*}" --gpu-only >/dev/null 2>&1
  fi
  timeout 300 ncu --clock-control none -k regex:splitkv_mla --launch-skip 4 --launch-count 1 \
    --metrics "$4" python3 bench/flashmla_ref/time_flashmla.py --lib "$2" \
    --cases ".fmla/cases-$lc.txt" 2>&1
}

# stall_metrics: ncu's warp-state sampling as cycles per issued instruction by stall reason, plus
# issue-slot use and the tensor pipe's active share (a --metrics list).
stall_metrics() {
  local r m x
  r="barrier long_scoreboard wait short_scoreboard math_pipe_throttle mio_throttle lg_throttle"
  r="$r no_instruction dispatch_stall membar sleeping branch_resolving misc not_selected selected"
  m=sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed
  m=$m,sm__inst_issued.avg.pct_of_peak_sustained_active
  for x in $r; do m=$m,smsp__average_warps_issue_stalled_${x}_per_issue_active.ratio; done
  echo "$m"
}

# show_stalls CASE NAME < ncu text: one line of stall_metrics' figures.
show_stalls() {
  awk -v c="$1" -v n="$2" '
    /hmma_cycles_active/ { te = $NF }
    /sm__inst_issued.avg.pct/ { is = $NF }
    /issue_stalled_/ { k = $1; sub(/.*issue_stalled_/, "", k); sub(/_per_issue_active.*/, "", k)
                       line = line sprintf(" %s %s", k, $NF) }
    END { printf "%-4s %-8s tensor %s%% issue %s%%:%s\n", c, n, te, is, line }'
}
