# How stages run their jobs: "local" runs them on this machine through
# utils/run.pl; "slurm" submits Slurm array jobs through utils/slurm.pl, with
# partitions and sbatch options from conf/slurm.conf when it exists.
# Switch every stage at once with  export TSEKIT_BACKEND=slurm  (or edit here).
backend=${TSEKIT_BACKEND:-local}

case "$backend" in
  local)
    export prep_cmd="utils/run.pl"
    export train_cmd="utils/run.pl"
    export infer_cmd="utils/run.pl"
    export score_cmd="utils/run.pl"
    ;;
  slurm)
    slurm_conf=""
    [ -f conf/slurm.conf ] && slurm_conf="--config conf/slurm.conf"
    export prep_cmd="utils/slurm.pl $slurm_conf --mem 4G"
    # GPU stages add "--gpu $ngpu" where they call these, training "--num-threads $train_threads"
    export train_cmd="utils/slurm.pl $slurm_conf --mem 16G"
    export infer_cmd="utils/slurm.pl $slurm_conf --mem 8G"
    export score_cmd="utils/slurm.pl $slurm_conf --mem 8G --num-threads 2"
    ;;
  *)
    echo "cmd.sh: unknown TSEKIT_BACKEND '$backend' (local or slurm)" >&2
    exit 1
    ;;
esac
