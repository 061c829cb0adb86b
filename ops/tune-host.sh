#!/usr/bin/env bash
# Tunes a bare-metal Linux host for ringcache, printing each change and why.
#
#   ops/tune-host.sh --dry-run [--shard-cpus 0-7] [--nic eth0] [--huge-pages N]
#   ops/tune-host.sh          [--shard-cpus 0-7] [--nic eth0] [--huge-pages N]   (as root)
#
# What it changes:
# - net.core.somaxconn, net.ipv4.tcp_max_syn_backlog: a burst of connects is queued, not
#   refused (ringcache's -b is capped by somaxconn);
# - net.core.rmem_max/wmem_max, net.ipv4.tcp_rmem/tcp_wmem: room for large values in
#   flight;
# - net.ipv4.ip_local_port_range: clients of a busy node do not run out of ports;
# - with --huge-pages N: vm.nr_hugepages (for --huge-pages in ringcache);
# - with --nic and --shard-cpus: the NIC's IRQs and RPS go to the CPUs that are not the
#   shards', so packet processing does not interrupt a shard;
# - the CPU frequency governor of the shard CPUs to "performance", where cpufreq exists.
#
# It refuses (exit 2) when it cannot tell what it would change: not Linux, a sysctl it
# cannot read, a NIC or CPU list that does not exist. --dry-run changes nothing and needs
# no privileges. Nothing is made persistent: put the printed sysctls in
# /etc/sysctl.d/ to keep them.
set -euo pipefail

dry_run=0
shard_cpus=""
nic=""
huge_pages=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --shard-cpus) shard_cpus="$2"; shift ;;
    --nic) nic="$2"; shift ;;
    --huge-pages) huge_pages="$2"; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

refuse() { echo "refusing: $*" >&2; exit 2; }
[ "$(uname -s)" = "Linux" ] || refuse "not Linux"
if [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  refuse "changing the host needs root (or use --dry-run)"
fi

# Expands a CPU list such as 0-3,8 into "0 1 2 3 8".
expand_cpus() {
  local out=() part a b
  IFS=',' read -ra parts <<< "$1"
  for part in "${parts[@]}"; do
    if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then
      a="${BASH_REMATCH[1]}"; b="${BASH_REMATCH[2]}"
      for ((i = a; i <= b; i++)); do out+=("$i"); done
    elif [[ "$part" =~ ^[0-9]+$ ]]; then
      out+=("$part")
    else
      refuse "bad CPU list: $1"
    fi
  done
  echo "${out[@]}"
}

change() { # what, current, wanted, why, command...
  local what="$1" current="$2" wanted="$3" why="$4"; shift 4
  if [ "$current" = "$wanted" ]; then
    echo "ok      $what = $current"
    return
  fi
  echo "change  $what: $current -> $wanted   ($why)"
  if [ "$dry_run" -eq 0 ]; then "$@"; fi
}

sysctl_at_least() { # key, minimum, why
  local key="$1" want="$2" why="$3" path="/proc/sys/${1//.//}" now
  [ -r "$path" ] || refuse "cannot read sysctl $key"
  now="$(cat "$path")"
  if [ "$now" -ge "$want" ] 2>/dev/null; then
    echo "ok      $key = $now"
  else
    change "$key" "$now" "$want" "$why" sysctl -q -w "$key=$want"
  fi
}

sysctl_is() { # key, value, why
  local key="$1" want="$2" why="$3" path="/proc/sys/${1//.//}" now
  [ -r "$path" ] || refuse "cannot read sysctl $key"
  now="$(tr -s '\t ' ' ' < "$path")"
  change "$key" "$now" "$want" "$why" sysctl -q -w "$key=$want"
}

buffer_range() { # key, default, max, why: raise the default and max, never lower them
  local key="$1" def="$2" max="$3" why="$4" path="/proc/sys/${1//.//}" lo cur_def cur_max
  [ -r "$path" ] || refuse "cannot read sysctl $key"
  read -r lo cur_def cur_max < "$path"
  [ "$cur_def" -gt "$def" ] && def="$cur_def"
  [ "$cur_max" -gt "$max" ] && max="$cur_max"
  change "$key" "$lo $cur_def $cur_max" "$lo $def $max" "$why" sysctl -q -w "$key=$lo $def $max"
}

echo "# sysctls"
sysctl_at_least net.core.somaxconn 65535 "the listen backlog (-b) is capped by it"
sysctl_at_least net.ipv4.tcp_max_syn_backlog 65535 "a burst of connects is queued, not dropped"
sysctl_at_least net.core.rmem_max 16777216 "receive buffers for large values"
sysctl_at_least net.core.wmem_max 16777216 "send buffers for large values"
buffer_range net.ipv4.tcp_rmem 131072 16777216 "TCP receive buffers (default, most)"
buffer_range net.ipv4.tcp_wmem 131072 16777216 "TCP send buffers (default, most)"
sysctl_is net.ipv4.ip_local_port_range "1024 65535" "clients of a busy node do not run out of ports"
if [ -n "$huge_pages" ]; then
  [[ "$huge_pages" =~ ^[0-9]+$ ]] || refuse "--huge-pages wants a number of 2 MiB pages"
  sysctl_at_least vm.nr_hugepages "$huge_pages" "huge pages for ringcache --huge-pages"
fi

if [ -n "$shard_cpus" ]; then
  cpus="$(expand_cpus "$shard_cpus")"
  ncpu="$(nproc --all)"
  for c in $cpus; do [ "$c" -lt "$ncpu" ] || refuse "CPU $c does not exist (this host has $ncpu)"; done
  echo "# CPU frequency governor of the shard CPUs"
  for c in $cpus; do
    gov="/sys/devices/system/cpu/cpu$c/cpufreq/scaling_governor"
    if [ -r "$gov" ]; then
      change "cpu$c governor" "$(cat "$gov")" performance "a shard's CPU should not ramp up under load" \
        sh -c "echo performance > $gov"
    else
      echo "skip    cpu$c governor (no cpufreq here: a VM, or fixed frequency)"
    fi
  done
  if [ -n "$nic" ]; then
    [ -d "/sys/class/net/$nic" ] || refuse "no network interface $nic"
    # The CPUs that are not the shards' take the NIC's interrupts and RPS work.
    mask=0
    for ((c = 0; c < ncpu; c++)); do
      case " $cpus " in *" $c "*) ;; *) mask=$((mask | (1 << c))) ;; esac
    done
    [ "$mask" -ne 0 ] || refuse "every CPU is a shard CPU: none left for the NIC"
    hexmask="$(printf '%x' "$mask")"
    echo "# IRQs and RPS of $nic away from the shard CPUs (mask $hexmask)"
    for irq in $(grep -E "\b$nic(-|\b)" /proc/interrupts | cut -d: -f1 | tr -d ' '); do
      f="/proc/irq/$irq/smp_affinity"
      [ -r "$f" ] || continue
      change "irq $irq affinity" "$(cat "$f")" "$hexmask" "NIC interrupts off the shards" sh -c "echo $hexmask > $f"
    done
    for q in /sys/class/net/"$nic"/queues/rx-*/rps_cpus; do
      [ -r "$q" ] || continue
      change "$(basename "$(dirname "$q")") rps_cpus" "$(cat "$q")" "$hexmask" "receive steering off the shards" \
        sh -c "echo $hexmask > $q"
    done
  fi
elif [ -n "$nic" ]; then
  refuse "--nic needs --shard-cpus (which CPUs to keep the NIC away from)"
fi
[ "$dry_run" -eq 1 ] && echo "# dry run: nothing changed"
exit 0
