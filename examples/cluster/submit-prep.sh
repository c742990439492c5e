#!/usr/bin/env bash
# Submit the preparation array and its merge: the merge starts only when all N pieces succeeded
# (afterok). A failed piece leaves the merge pending; re-run that piece with
#   sbatch --array=<i> prep-array.sbatch
# then release the merge (scontrol release) or submit merge.sbatch again.
#
#   MIMIC=/data/mimic-cxr-jpg OUT=/scratch/shards N=16 bash examples/cluster/submit-prep.sh
set -euo pipefail
cd "$(dirname "$0")"
: "${MIMIC:?}" "${OUT:?}" "${N:?}"
mkdir -p logs
jid=$(sbatch --parsable --array=0-$((N - 1)) --export=ALL prep-array.sbatch)
sbatch --dependency=afterok:"$jid" --export=ALL merge.sbatch
echo "pieces: job $jid (array 0-$((N - 1))); merge queued after them"
