#!/bin/sh
# One entrypoint for the scheduler, worker and notebook images (run under tini).
#   scheduler [dask scheduler args]   worker [ADDRESS] [dask worker args]
#   notebook [jupyter lab args]       health (the HEALTHCHECK)      anything else: exec it
# The official images' commands work too: `dask-scheduler`, `dask scheduler` as scheduler,
# `dask-worker`, `dask worker` as worker (Compose files, Helm charts and docs use them).
# EXTRA_PIP_PACKAGES installs packages at start, as in dask-docker's images; with
# EXTRA_PIP_FIND_LINKS (a mounted wheelhouse) it installs from there with no network.
# A failed install stops the container with a non-zero status, and so does
# EXTRA_CONDA_PACKAGES or EXTRA_APT_PACKAGES, which these images can't honour.
set -eu

# Our role for a command line's first two words: scheduler, worker, or the first word.
role_of() {
  case "$1" in
    dask-scheduler) echo scheduler ;;
    dask-worker) echo worker ;;
    dask) case "${2:-}" in scheduler|worker) echo "$2" ;; *) echo dask ;; esac ;;
    *) echo "$1" ;;
  esac
}

role=${1:-${CLUSTERCTL_ROLE:-scheduler}}
[ "$#" -gt 0 ] && shift
case "$role" in
  dask-scheduler|dask-worker) role=$(role_of "$role") ;;
  dask) case "${1:-}" in scheduler|worker) role=$1; shift ;; esac ;;
esac

if [ "$role" = health ]; then
  # The role this container runs, which its command may have changed from the image's
  # (`dask-scheduler` in the worker image): tini, PID 1, keeps the command line it ran us with.
  running=${CLUSTERCTL_ROLE:-scheduler}
  if [ -r /proc/1/cmdline ]; then
    set -f  # the two words after ours, e.g. "dask-worker tcp://...", "dask worker", "worker"
    # shellcheck disable=SC2046
    set -- $(tr '\0' '\n' < /proc/1/cmdline | sed -n '/clusterctl-entrypoint$/{n;p;n;p;q;}')
    if [ "$#" -gt 0 ]; then
      case "$(role_of "$@")" in scheduler|worker|notebook) running=$(role_of "$@") ;; esac
    fi
  fi
  case "$running" in
    scheduler) port=${DASK_DASHBOARD_PORT:-8787} path=/health ;;
    worker)    port=${DASK_WORKER_DASHBOARD_PORT:-8788} path=/health ;;
    notebook)  port=${JUPYTER_PORT:-8888} path=/api ;;
    *) echo "health: unknown role $running" >&2; exit 1 ;;
  esac
  # One GET over a bare socket, in an interpreter without site-packages: the probe takes
  # 0.025 CPU-s, with urllib ~0.08, every 3 s in every container (64 workers: 1.7 cores).
  exec python -I -S -c '
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3) as s:
        s.sendall(b"GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" % sys.argv[2].encode())
        sys.exit(0 if s.recv(64).split(b" ")[1:2] == [b"200"] else 1)
except OSError:
    sys.exit(1)
' "$port" "$path"
fi

# dask-docker's images also install conda and apt packages at start; these have neither
# conda nor root, so rather than run without the packages asked for, they stop. Only the
# variable's name is printed, never its value (a channel URL can carry a password).
refused="" value=""
for name in EXTRA_CONDA_PACKAGES EXTRA_APT_PACKAGES; do
  eval "value=\${$name:-}"
  case "$value" in
    *[![:space:]]*) ;;
    *) continue ;;
  esac
  refused=1
  if [ "$name" = EXTRA_CONDA_PACKAGES ]; then
    echo "EXTRA_CONDA_PACKAGES is set, but clusterctl's images have no conda: their locked" \
      "Python environment is installed with pip. Use EXTRA_PIP_PACKAGES instead (with" \
      "EXTRA_PIP_FIND_LINKS for a mounted wheelhouse), or build the packages into the" \
      "images: clusterctl image build --extra PACKAGE, or --sync for the whole Python" \
      "environment of the client" >&2
  else
    echo "EXTRA_APT_PACKAGES is set, but clusterctl's images run as a non-root user and" \
      "install no system packages at start. Build them into the images instead, from a" \
      "base image that has them: clusterctl image build --base IMAGE (e.g. one FROM" \
      "python:X.Y.Z-slim with your apt-get install)" >&2
  fi
  echo "$name: stopping (exit status 3); unset it, or leave it empty, to start without it" >&2
done
unset value
[ -z "$refused" ] || exit 3

if [ -n "${EXTRA_PIP_PACKAGES:-}" ]; then
  # Its value is never printed: an index URL in it may carry a password. It is split into
  # words (several requirements and options) with globbing off, so that `dask[complete]`
  # or `*` reach pip as written, whatever files the working folder holds.
  set -f
  from=""
  [ -n "${EXTRA_PIP_FIND_LINKS:-}" ] && from="--no-index --find-links $EXTRA_PIP_FIND_LINKS"
  echo "EXTRA_PIP_PACKAGES: installing${from:+ from EXTRA_PIP_FIND_LINKS only}" >&2
  # shellcheck disable=SC2086
  if ! python /opt/clusterctl/pip.whl/pip install --no-cache-dir --disable-pip-version-check $from $EXTRA_PIP_PACKAGES >&2
  then
    echo "EXTRA_PIP_PACKAGES: the install failed (pip's messages above); stopping" >&2
    exit 3
  fi
  set +f
fi

# Whole CPUs the container may use (cgroup v1 or v2), empty when unlimited. Dask reads
# this itself only where v1 mounts "cpu,cpuacct", not the plain "cpu" some hosts use.
cpu_limit() {
  quota="" period=""
  for dir in /sys/fs/cgroup/cpu /sys/fs/cgroup/cpu,cpuacct /sys/fs/cgroup/cpuacct,cpu; do
    if [ -r "$dir/cpu.cfs_quota_us" ]; then
      quota=$(cat "$dir/cpu.cfs_quota_us"); period=$(cat "$dir/cpu.cfs_period_us"); break
    fi
  done
  if [ -z "$quota" ] && [ -r /sys/fs/cgroup/cpu.max ]; then
    read -r quota period < /sys/fs/cgroup/cpu.max
  fi
  case "$quota" in ""|max|-1) return 0 ;; esac
  echo $(( (quota + period - 1) / period ))
}

case "$role" in
  scheduler)
    exec dask scheduler --dashboard-address ":${DASK_DASHBOARD_PORT:-8787}" "$@" ;;
  worker)
    # The scheduler: an address among the arguments (anywhere, with or without tcp://, as
    # `dask worker` takes it), else DASK_SCHEDULER_ADDRESS, which Dask reads itself (so a
    # value in quotes, as dask-docker's Compose file writes it, works), else the service
    # `scheduler`. --scheduler-file wins over both, as in `dask worker`.
    export DASK_SCHEDULER_ADDRESS="${DASK_SCHEDULER_ADDRESS:-tcp://scheduler:8786}"
    # Sized from the container's limits unless told otherwise: threads from the CPU
    # limit, memory all of the container's (1.0 = the whole cgroup memory limit, which Dask
    # reads; its "auto" would give a worker only threads/host-cores of it). With several
    # worker processes (--nworkers, or the old --nprocs), Dask's own sizing splits the
    # container between them; ours would give each one all of it.
    case " $* " in
      *" --nthreads"*|*" --nworkers"*|*" --nprocs"*) ;;
      *) threads=$(cpu_limit); [ -n "$threads" ] && set -- --nthreads "$threads" "$@" ;;
    esac
    case " $* " in
      *" --memory-limit"*|*" --nworkers"*|*" --nprocs"*) ;;
      *) set -- --memory-limit 1.0 "$@" ;;
    esac
    # Named after the container's hostname unless told otherwise: the one name a replica
    # of a Compose service or a pod can know, and the one its orchestrator shows.
    case " $* " in
      *" --name"*) ;;
      *) set -- --name "$(cat /etc/hostname)" "$@" ;;
    esac
    # No per-worker Bokeh dashboard unless asked for (--dashboard), as with LocalCluster's
    # workers: importing Bokeh costs each worker ~0.8 s of CPU at start, and the port is
    # not published. Its HTTP server (/health, /metrics) runs either way.
    case " $* " in
      *" --dashboard "*|*" --no-dashboard "*) ;;
      *) set -- --no-dashboard "$@" ;;
    esac
    # The nanny forks its worker process, which so starts with distributed imported,
    # rather than spawning an interpreter that imports it all again: ~0.8 s less CPU per
    # worker, and Client.restart() in 0.3 s instead of 2.7 s. A forked worker gets from
    # here what distributed.nanny.pre-spawn-environ gives a spawned one (its hash seed,
    # malloc trimming, one BLAS thread), as these must be set before Python and numpy
    # start. DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD=spawn in a group's env
    # brings the spawning back.
    # clusterctl.forking gives a forked worker a spawned one's signal handling; it is
    # preloaded beside any --preload-nanny of the command's own (the option repeats).
    export DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD="${DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD:-fork}"
    set -- --preload-nanny clusterctl.forking "$@"
    export PYTHONHASHSEED="${PYTHONHASHSEED:-6640}" \
      MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-65536}" \
      OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}" \
      OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
    exec dask worker --dashboard-address ":${DASK_WORKER_DASHBOARD_PORT:-8788}" "$@" ;;
  notebook)
    # The cluster's dashboard through JupyterLab's own port, by jupyter-server-proxy:
    # /proxy/<scheduler>:8787/..., for that host alone (and only with JupyterLab's token or
    # cookie), so one forwarded port (an SSH tunnel, kubectl port-forward) serves both.
    host=$(printf '%s' "${DASK_SCHEDULER_ADDRESS:-}" | tr -d "\"'")
    host=${host#*://}
    host=${host%:*}
    case "$host" in
      ""|*[!A-Za-z0-9.-]*) proxied="" ;;  # none, or not a host name to allow
      *)
        proxied="/proxy/$host:8787"
        # (a .d file would only enable extensions: settings go in the config file proper)
        printf '{"ServerProxy": {"host_allowlist": ["%s"]}}\n' "$host" \
          > /opt/venv/etc/jupyter/jupyter_server_config.json ;;
    esac
    # Client().dashboard_link: where a browser on the machine that runs the cluster finds
    # the dashboard (its published port), else the path through JupyterLab.
    link=${CLUSTERCTL_DASHBOARD_URL:-$proxied}
    if [ -n "$link" ]; then
      export DASK_DISTRIBUTED__DASHBOARD__LINK="${DASK_DISTRIBUTED__DASHBOARD__LINK:-$link/status}"
      # dask-labextension's sidebar shows this cluster's dashboard panes, through the proxy
      # where there is one (and no launcher of other clusters); overrides.json sets the
      # defaults users may still change.
      mkdir -p /opt/venv/share/jupyter/lab/settings
      printf '{"dask-labextension:plugin": {"defaultURL": "%s", "hideClusterManager": true}}\n' \
        "${proxied:-$link}" > /opt/venv/share/jupyter/lab/settings/overrides.json
    fi
    # JUPYTERLAB_ARGS: more options, split into words with globbing off, as dask-docker's
    # notebook image takes them. Its files are its working folder's: the image's /home/dask,
    # or a cluster's share-dir.
    set -f
    # shellcheck disable=SC2086
    exec jupyter lab --ip=0.0.0.0 --port="${JUPYTER_PORT:-8888}" --no-browser \
      --ServerApp.root_dir="$PWD" "$@" ${JUPYTERLAB_ARGS:-} ;;
  *)
    exec "$role" "$@" ;;
esac
