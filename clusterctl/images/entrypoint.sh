#!/bin/sh
# One entrypoint for the scheduler, worker and notebook images (run under tini).
#   scheduler [dask scheduler args]   worker [ADDRESS] [dask worker args]
#   notebook [jupyter lab args]       health (the HEALTHCHECK)      anything else: exec it
# EXTRA_PIP_PACKAGES installs packages at start, as in dask-docker's images; with
# EXTRA_PIP_FIND_LINKS (a mounted wheelhouse) it installs from there with no network.
# A failed install stops the container with a non-zero status.
set -eu

role=${1:-${CLUSTERCTL_ROLE:-scheduler}}
[ "$#" -gt 0 ] && shift

if [ "$role" = health ]; then
  case "${CLUSTERCTL_ROLE:-scheduler}" in
    scheduler) url="http://127.0.0.1:${DASK_DASHBOARD_PORT:-8787}/health" ;;
    worker)    url="http://127.0.0.1:${DASK_WORKER_DASHBOARD_PORT:-8788}/health" ;;
    notebook)  url="http://127.0.0.1:${JUPYTER_PORT:-8888}/api" ;;
    *) echo "health: unknown role ${CLUSTERCTL_ROLE}" >&2; exit 1 ;;
  esac
  exec python -c "import sys, urllib.request as u; sys.exit(0 if u.urlopen(sys.argv[1], timeout=3).status == 200 else 1)" "$url"
fi

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
    address=${DASK_SCHEDULER_ADDRESS:-tcp://scheduler:8786}
    case "${1:-}" in tcp://*|tls://*) address=$1; shift ;; esac
    # Sized from the container's limits unless told otherwise: threads from the CPU
    # limit, memory all of the container's (1.0 = the whole cgroup memory limit, which Dask
    # reads; its "auto" would give a worker only threads/host-cores of it).
    case " $* " in
      *" --nthreads"*) ;;
      *) threads=$(cpu_limit); [ -n "$threads" ] && set -- --nthreads "$threads" "$@" ;;
    esac
    case " $* " in
      *" --memory-limit"*) ;;
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
    exec dask worker "$address" --dashboard-address ":${DASK_WORKER_DASHBOARD_PORT:-8788}" "$@" ;;
  notebook)
    if [ -n "${CLUSTERCTL_DASHBOARD_URL:-}" ]; then
      # dask-labextension's sidebar shows this cluster's dashboard panes (and no launcher
      # of other clusters); overrides.json sets the defaults users may still change.
      mkdir -p /opt/venv/share/jupyter/lab/settings
      printf '{"dask-labextension:plugin": {"defaultURL": "%s", "hideClusterManager": true}}\n' \
        "$CLUSTERCTL_DASHBOARD_URL" > /opt/venv/share/jupyter/lab/settings/overrides.json
    fi
    exec jupyter lab --ip=0.0.0.0 --port="${JUPYTER_PORT:-8888}" --no-browser \
      --ServerApp.root_dir=/home/dask "$@" ;;
  *)
    exec "$role" "$@" ;;
esac
