#!/usr/bin/env bash
# A Redis replica's full sync of a dataset of a given byte size, diskless on both ends, timed
# from REPLICAOF to the replica reporting the link up and the sync finished. The comparison
# beside `tandem bench duplex --what transfer` (BENCHMARKS.md).
#
# usage: scripts/bench-redis-sync.sh BYTES [VALUE_BYTES]
set -euo pipefail
bytes=${1:?usage: $0 BYTES [VALUE_BYTES]}
value_bytes=${2:-1000}
keys=$(( bytes / value_bytes ))
master_port=${REDIS_MASTER_PORT:-16379}
replica_port=${REDIS_REPLICA_PORT:-16380}
dir=$(mktemp -d)
trap 'redis-cli -p $master_port shutdown nosave >/dev/null 2>&1 || true; redis-cli -p $replica_port shutdown nosave >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

common=(--save "" --appendonly no --daemonize yes --dir "$dir" --protected-mode no)
redis-server --port "$master_port" "${common[@]}" --logfile "$dir/master.log" --enable-debug-command local \
  --repl-diskless-sync yes --repl-diskless-sync-delay 0
redis-server --port "$replica_port" "${common[@]}" --logfile "$dir/replica.log" \
  --repl-diskless-load swapdb
until redis-cli -p "$master_port" ping >/dev/null 2>&1 && redis-cli -p "$replica_port" ping >/dev/null 2>&1; do
  sleep 0.05
done
redis-cli -p "$master_port" debug populate "$keys" key "$value_bytes" >/dev/null
used=$(redis-cli -p "$master_port" info memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r')

start=$(date +%s%N)
redis-cli -p "$replica_port" replicaof 127.0.0.1 "$master_port" >/dev/null
while true; do
  info=$(redis-cli -p "$replica_port" info replication)
  if grep -q 'master_link_status:up' <<<"$info" && grep -q 'master_sync_in_progress:0' <<<"$info"; then
    break
  fi
  sleep 0.005
done
end=$(date +%s%N)
ms=$(( (end - start) / 1000000 ))
replica_keys=$(redis-cli -p "$replica_port" dbsize)
[ "$replica_keys" = "$keys" ] || { echo "the replica holds $replica_keys keys, not $keys" >&2; exit 1; }
mbps=$(awk -v b="$bytes" -v ms="$ms" 'BEGIN { printf "%.1f", (b / 1e6) / (ms / 1000.0) }')
echo "{\"bench\":\"redis-replica-full-sync\",\"payload_bytes\":$bytes,\"keys\":$keys,\"value_bytes\":$value_bytes,\"master_used_memory\":$used,\"sync_ms\":$ms,\"mb_per_s\":$mbps}"
