#!/bin/bash
# Submit slurm/array.sbatch with --array set from a sweep file (one task per sweep point), and a small
# job that prints the sweep's summary when the array has ended.
#
#   slurm/submit_array.sh SWEEP_FILE [sbatch option ...] [-- override applied to every line ...]
#
#   slurm/submit_array.sh slurm/sweep.txt
#   slurm/submit_array.sh slurm/sweep.txt --partition=gpu --time=08:00:00 -- logger.wandb.mode=online
#
# The tasks run the Python found here, at submission (exported to them as ACM_EXP_PYTHON): the
# ACM_EXP_PYTHON you set, else $VIRTUAL_ENV/bin/python, else the repository's .venv/bin/python, else
# python3; submission stops when it cannot import acm_exp. Logs: outputs/slurm/acm_exp-<id>_<i>.out,
# the summary (python -m acm_exp.sweep: one row per point, ran / skipped / failed) in
# outputs/slurm/acm_exp-<id>-summary.out. ACM_EXP_ARRAY_PARALLELISM (default 16) caps the tasks
# running at once (--array=0-N%P). Prints "Submitted batch job <id>" for the array.
set -euo pipefail

sweep_file=${1:?usage: slurm/submit_array.sh SWEEP_FILE [sbatch option ...] [-- override ...]}
shift
sbatch_options=()
while (( $# )) && [[ $1 != -- ]]; do
    sbatch_options+=("$1")
    shift
done
(( $# )) && shift  # the --

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ -n ${ACM_EXP_PYTHON:-} ]]; then
    python=$ACM_EXP_PYTHON
elif [[ -n ${VIRTUAL_ENV:-} && -x $VIRTUAL_ENV/bin/python ]]; then
    python=$VIRTUAL_ENV/bin/python
elif [[ -x $script_dir/../.venv/bin/python ]]; then
    python=$(cd "$script_dir/.." && pwd)/.venv/bin/python
else
    python=$(command -v python3 || echo python3)
fi
if ! "$python" -c 'import acm_exp' 2>/dev/null; then
    echo "submit_array: $python cannot import acm_exp; set ACM_EXP_PYTHON=/path/to/venv/bin/python" >&2
    exit 2
fi
export ACM_EXP_PYTHON=$python

points=$(grep -c -v -E '^[[:space:]]*(#|$)' "$sweep_file" || true)
if (( points == 0 )); then
    echo "submit_array: no sweep points in $sweep_file" >&2
    exit 2
fi
parallelism=${ACM_EXP_ARRAY_PARALLELISM:-16}
mkdir -p outputs/slurm
array_job=$(sbatch --parsable --array="0-$((points - 1))%$parallelism" "${sbatch_options[@]}" \
    "$script_dir/array.sbatch" "$sweep_file" "$@")
array_job=${array_job%%;*}
echo "Submitted batch job $array_job"

# The summary job: where the array ran (partition, account, QOS), one CPU, after every task ended.
placement=()
for option in "${sbatch_options[@]}"; do
    case $option in
        --partition=* | --account=* | --qos=* | --reservation=* | --clusters=*) placement+=("$option") ;;
    esac
done
sweep_dir=${ACM_EXP_SWEEP_DIR:-outputs/slurm/$array_job}
summary_command=$(printf '%q ' "$python" -m acm_exp.sweep "$sweep_dir" --points "$sweep_file" -- "$@")
summary_log=outputs/slurm/acm_exp-$array_job-summary.out
summary_job=$(sbatch --parsable --dependency="afterany:$array_job" --kill-on-invalid-dep=yes \
    --job-name=acm_exp-summary --output="$summary_log" --ntasks=1 --cpus-per-task=1 --mem=1G --time=10 \
    "${placement[@]}" --wrap="$summary_command")
echo "sweep summary when the array has ended: $summary_log (job ${summary_job%%;*}; or run: $summary_command)"
