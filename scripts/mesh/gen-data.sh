#!/usr/bin/env bash
# Generates labeled CyberMesh captures: benign LAN traffic plus four attack
# classes (port scan, flood, password guessing, bulk exfiltration), inside
# network namespaces this script creates. Run as root.
#
#   scripts/mesh/gen-data.sh [OUT_DIR] [ROUNDS] [ROUND_SECONDS]
#   (defaults: data/mesh 5 150; a round lasts ROUND_SECONDS or as long as its
#   attacks, whichever is longer, with benign traffic throughout)
#
# Output, per round r (rounds run one after another, so a temporal split is
# "train on the first rounds, test on the last"):
#   OUT_DIR/round-r.pcap    everything seen on the namespace bridge
#   OUT_DIR/labels.csv      round,src_ip,class,start,end (epoch seconds)
#
# Safety: every address is in 10.77.0.0/24 on veth links joined by a bridge
# in a namespace of its own; nothing is routed to the host or beyond, and
# every loop is bounded by a deadline. Set MESH_SKIP_APT=1 to skip apt-get;
# MESH_FIRST_ROUND=K appends rounds K..ROUNDS to an existing OUT_DIR.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/data/mesh}"
rounds="${2:-5}"
round_secs="${3:-150}"
[ "$(id -u)" = 0 ] || { echo "gen-data.sh: run as root (needs ip netns)" >&2; exit 1; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ "${MESH_SKIP_APT:-0}" != 1 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    iproute2 tcpdump nmap hping3 hydra openssh-server openssh-client sshpass \
    vsftpd curl netcat-openbsd iperf3 dnsutils socat iputils-ping python3 procps
fi

NET=10.77.0
SRV=$NET.10
HUB=mesh-hub
# benign clients and attackers (one attacker address per class)
BENIGN_HOSTS="c1:$NET.21 c2:$NET.22 c3:$NET.23 c4:$NET.24 c5:$NET.25 c6:$NET.26 c7:$NET.27 c8:$NET.28"
ATTACK_HOSTS="a1:$NET.101 a2:$NET.102 a3:$NET.103 a4:$NET.104"
USER_NAME=meshuser
USER_PW='Correct-Horse-7'
work="$(mktemp -d /tmp/mesh-gen.XXXXXX)"
chmod 755 "$work"

ns() { ip netns exec "mesh-$1" "${@:2}"; }

cleanup() {
  set +e
  for n in $(ip netns list | awk '{print $1}' | grep '^mesh-'); do
    ip netns pids "$n" 2>/dev/null | xargs -r kill 2>/dev/null
  done
  sleep 1
  for n in $(ip netns list | awk '{print $1}' | grep '^mesh-'); do
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$n"
  done
  rm -rf "$work"
}
trap cleanup EXIT
cleanup 2>/dev/null || true
work="$(mktemp -d /tmp/mesh-gen.XXXXXX)"
chmod 755 "$work"

# ---- topology: one bridge namespace, one namespace per host -------------
ip netns add "$HUB"
ip -n "$HUB" link set lo up
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" link set br0 up
add_host() { # name ip
  local name=$1 addr=$2
  ip netns add "mesh-$name"
  ip -n "mesh-$name" link set lo up
  ip link add "v-$name" type veth peer name eth0 netns "mesh-$name"
  ip link set "v-$name" netns "$HUB"
  ip -n "$HUB" link set "v-$name" master br0 up
  ip -n "mesh-$name" addr add "$addr/24" dev eth0
  ip -n "mesh-$name" link set eth0 up
}
add_host srv "$SRV"
for h in $BENIGN_HOSTS $ATTACK_HOSTS; do add_host "${h%%:*}" "${h#*:}"; done

# ---- services on srv -----------------------------------------------------
id "$USER_NAME" >/dev/null 2>&1 || useradd -m -s /bin/bash "$USER_NAME"
echo "$USER_NAME:$USER_PW" | chpasswd
mkdir -p "$work/www" "$work/ftp" /run/sshd /var/run/vsftpd/empty
for i in $(seq 1 40); do head -c $((RANDOM % 20000 + 200)) /dev/urandom | base64 > "$work/www/page$i.html"; done
for s in 1 4 12; do head -c $((s * 1000000)) /dev/urandom > "$work/www/blob${s}m.bin"; done
cp "$work/www/page1.html" "$work/ftp/readme.txt"
head -c 3000000 /dev/urandom > "$work/ftp/archive.bin"
chmod -R a+rX "$work"
ssh-keygen -A >/dev/null
cat > "$work/sshd_config" <<EOF
Port 22
ListenAddress $SRV
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM yes
MaxStartups 100:30:200
MaxAuthTries 6
LoginGraceTime 20
PidFile $work/sshd.pid
EOF
cat > "$work/vsftpd.conf" <<EOF
listen=YES
listen_address=$SRV
anonymous_enable=NO
local_enable=YES
write_enable=NO
local_root=$work/ftp
pam_service_name=vsftpd
seccomp_sandbox=NO
max_per_ip=0
max_clients=0
pasv_enable=YES
pasv_min_port=30000
pasv_max_port=30100
secure_chroot_dir=/var/run/vsftpd/empty
EOF
# vsftpd refuses users whose shell is not in /etc/shells; bash is there.
ns srv /usr/sbin/sshd -f "$work/sshd_config"
ns srv vsftpd "$work/vsftpd.conf" &
(cd "$work/www" && ns srv python3 -m http.server 80 --bind "$SRV" >/dev/null 2>&1) &
ns srv python3 "$here/auth_http.py" 8080 "$USER_NAME" "$USER_PW" >/dev/null 2>&1 &
ns srv python3 "$here/dns_responder.py" 53 >/dev/null 2>&1 &
ns srv iperf3 -s -B "$SRV" -D >/dev/null 2>&1
ns srv socat -u "TCP-LISTEN:9000,fork,reuseaddr,bind=$SRV" OPEN:/dev/null >/dev/null 2>&1 &
ns srv socat -u "TCP-LISTEN:8443,fork,reuseaddr,bind=$SRV" OPEN:/dev/null >/dev/null 2>&1 &
sleep 2

cd "$work" # hydra writes hydra.restore into the working directory

# password list for the guessing scenario: wrong guesses, the right one late
for i in $(seq 1 400); do echo "guess$i$RANDOM"; done > "$work/words.txt"
{ head -n 60 "$work/words.txt"; } > "$work/words-short.txt"

labels="$out/labels.csv"
[ -f "$labels" ] || echo "round,src_ip,class,start,end" > "$labels"
now() { date +%s.%N; }
label() { echo "$1,$2,$3,$4,$5" >> "$labels"; }

# ---- benign client behaviour ----------------------------------------------
# Benign hosts run until the round's stop file appears (or a hard deadline).
running() { [ ! -e "$work/stop" ] && [ "$(date +%s)" -lt "$1" ]; }
benign_client() { # host deadline seed
  local host=$1 deadline=$2
  RANDOM=$3
  while running "$deadline"; do
    local r=$((RANDOM % 100))
    if   [ $r -lt 40 ]; then ns "$host" curl -s -o /dev/null -m 5 "http://$SRV/page$((RANDOM % 40 + 1)).html"
    elif [ $r -lt 62 ]; then ns "$host" dig +tries=1 +time=1 @"$SRV" "host$RANDOM.lan.example" >/dev/null
    elif [ $r -lt 66 ]; then ns "$host" curl -s -o /dev/null -m 20 "http://$SRV/blob$((RANDOM % 2 ? 1 : 4))m.bin"
    elif [ $r -lt 70 ]; then ns "$host" sshpass -p "$USER_PW" ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 "$USER_NAME@$SRV" "ls /; sleep 0.$((RANDOM % 9))" >/dev/null 2>&1 || true
    elif [ $r -lt 74 ]; then ns "$host" curl -s -o /dev/null -m 20 "ftp://$USER_NAME:$USER_PW@$SRV/$([ $((RANDOM % 2)) = 0 ] && echo readme.txt || echo archive.bin)" || true
    elif [ $r -lt 80 ]; then ns "$host" curl -s -o /dev/null -m 5 -u "$USER_NAME:$USER_PW" "http://$SRV:8080/"
    elif [ $r -lt 83 ]; then ns "$host" ping -c $((RANDOM % 4 + 1)) -i 0.2 -W 1 "$SRV" >/dev/null || true
    elif [ $r -lt 85 ]; then ns "$host" iperf3 -c "$SRV" -R -t 1 -b 20M >/dev/null 2>&1 || true
    elif [ $r -lt 88 ]; then head -c $((RANDOM * 20 + 1000)) /dev/urandom | ns "$host" curl -s -o /dev/null -m 10 --data-binary @- "http://$SRV:8443/upload" || true
    elif [ $r -lt 90 ]; then ns "$host" curl -s -o /dev/null -m 5 -u "$USER_NAME:typo$RANDOM" "http://$SRV:8080/" # a mistyped password
    elif [ $r -lt 92 ]; then # a short burst of parallel fetches, like a browser loading a page
      for k in 1 2 3 4 5 6; do ns "$host" curl -s -o /dev/null -m 5 "http://$SRV/page$((RANDOM % 40 + 1)).html" & done; wait
    else ns "$host" curl -s -o /dev/null -m 5 "http://$SRV/page$((RANDOM % 40 + 1)).html"
    fi
    sleep "0.$((RANDOM % 6))$((RANDOM % 10))"
  done
}
# a monitoring poller: fast but regular, small requests (a benign hard case)
poller() { # host deadline
  while running "$2"; do
    ns "$1" curl -s -o /dev/null -m 2 "http://$SRV/page1.html"
    sleep 0.1
  done
}

# ---- attacks ---------------------------------------------------------------
# Every round runs every variant (so training sees each tool), with a
# round-dependent port range and order.
attack_scan() { # round host ip
  local t0; t0=$(now)
  local base=$(( (RANDOM % 20) * 100 + 1 ))
  ns "$2" nmap -sS -T4 -n -Pn --max-retries 1 -p "$base-$((base + 999))" "$SRV" >/dev/null
  sleep 1
  ns "$2" nmap -sT -T4 -n -Pn --max-retries 1 --top-ports $((RANDOM % 400 + 500)) "$SRV" >/dev/null
  sleep 1
  ns "$2" nmap -sF -T3 -n -Pn --max-retries 0 -p "1-$((RANDOM % 300 + 300))" "$SRV" >/dev/null
  ns "$2" nmap -sU -T5 -n -Pn --max-retries 0 -p "1-$((RANDOM % 100 + 100))" "$SRV" >/dev/null 2>&1 || true
  label "$1" "$3" portscan "$t0" "$(now)"
}
attack_flood() { # round host ip
  local t0; t0=$(now)
  ns "$2" timeout 30 hping3 -q -S -p 80 -i u400 -c $((RANDOM % 1000 + 1500)) "$SRV" >/dev/null 2>&1 || true
  ns "$2" timeout 30 hping3 -q --udp -p 53 -d 8 -i u400 -c $((RANDOM % 1000 + 1500)) "$SRV" >/dev/null 2>&1 || true
  ns "$2" timeout 30 hping3 -q -S -p 22 -i u500 -c $((RANDOM % 500 + 1000)) "$SRV" >/dev/null 2>&1 || true
  ns "$2" timeout 30 hping3 -q -A -p 80 -i u500 -c $((RANDOM % 500 + 500)) "$SRV" >/dev/null 2>&1 || true
  label "$1" "$3" flood "$t0" "$(now)"
}
attack_brute() { # round host ip
  local t0; t0=$(now)
  ns "$2" timeout 40 hydra -I -q -l "$USER_NAME" -P "$work/words-short.txt" -t 4 "ssh://$SRV" >/dev/null 2>&1 || true
  ns "$2" timeout 40 hydra -I -q -l "$USER_NAME" -P "$work/words.txt" -t 8 "ftp://$SRV" >/dev/null 2>&1 || true
  ns "$2" timeout 30 hydra -I -q -l "$USER_NAME" -P "$work/words.txt" -t 8 -s 8080 "http-get://$SRV/" >/dev/null 2>&1 || true
  label "$1" "$3" bruteforce "$t0" "$(now)"
}
attack_exfil() { # round host ip
  local t0; t0=$(now)
  # staged bulk uploads: a few large ones, then many mid-sized chunks
  for k in $(seq 1 $((RANDOM % 3 + 2))); do
    local port=$([ $((RANDOM % 2)) = 0 ] && echo 9000 || echo 8443)
    head -c $(( (RANDOM % 20 + 15) * 1000000 )) /dev/urandom | ns "$2" timeout 30 nc -N "$SRV" "$port" || true
    sleep 0.5
  done
  for k in $(seq 1 $((RANDOM % 10 + 15))); do
    local port=$([ $((RANDOM % 2)) = 0 ] && echo 9000 || echo 8443)
    head -c $(( (RANDOM % 6 + 2) * 1000000 )) /dev/urandom | ns "$2" timeout 30 nc -N "$SRV" "$port" || true
    sleep 0.$((RANDOM % 9))
  done
  label "$1" "$3" exfiltration "$t0" "$(now)"
}

# ---- rounds --------------------------------------------------------------
for r in $(seq "${MESH_FIRST_ROUND:-1}" "$rounds"); do
  pcap="$out/round-$r.pcap"
  ip netns exec "$HUB" tcpdump -Z root -q -n -i br0 -s 0 -B 32768 -w "$pcap" >/dev/null 2>&1 &
  dump=$!
  sleep 1
  rm -f "$work/stop"
  start=$(date +%s)
  deadline=$((start + round_secs + 600))
  pids=()
  seed=$((r * 1000))
  for h in $BENIGN_HOSTS; do
    name=${h%%:*}; seed=$((seed + 1))
    benign_client "$name" "$deadline" "$seed" & pids+=($!)
  done
  poller c5 "$deadline" & pids+=($!)
  # attacks at staggered offsets; the order changes per round
  sleep 8
  order=(scan flood brute exfil)
  [ $((r % 2)) = 0 ] && order=(brute exfil scan flood)
  i=0
  for a in "${order[@]}"; do
    i=$((i + 1)); host=a$i; ip=$NET.$((100 + i))
    case $a in
      scan) attack_scan "$r" "$host" "$ip" ;;
      flood) attack_flood "$r" "$host" "$ip" ;;
      brute) attack_brute "$r" "$host" "$ip" ;;
      exfil) attack_exfil "$r" "$host" "$ip" ;;
    esac
    sleep 4
  done
  # benign traffic goes on for at least ROUND_SECONDS in all
  while [ "$(date +%s)" -lt $((start + round_secs)) ]; do sleep 1; done
  touch "$work/stop"
  wait "${pids[@]}" || true
  for h in $BENIGN_HOSTS; do label "$r" "${h#*:}" benign "$start" "$(date +%s)"; done
  sleep 2
  kill -INT "$dump"; wait "$dump" || true
  echo "round $r: $(stat -c %s "$pcap") bytes -> $pcap" >&2
done
echo "labels: $labels" >&2
