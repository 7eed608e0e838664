#!/usr/bin/env bash
# Generates labeled CyberMesh captures: benign LAN traffic of several kinds
# plus four attack classes (port scan, flood, password guessing, bulk
# exfiltration) split into 18 families, each from attacker addresses of its
# own, inside network namespaces this script creates. Run as root.
#
#   scripts/mesh/gen-data.sh [OUT_DIR] [ROUNDS] [ROUND_SECONDS]
#   (defaults: data/mesh 5 270; a round lasts ROUND_SECONDS or as long as its
#   attacks, whichever is longer, with benign traffic throughout)
#
# Output, per round r (rounds run one after another, so a temporal split is
# "train on the first rounds, test on the last"):
#   OUT_DIR/round-r.pcap    everything seen on the namespace bridge
#   OUT_DIR/labels.csv      round,src_ip,class,family,start,end (epoch seconds;
#                           one line per host and family, with its time span)
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
round_secs="${3:-270}"
[ "$(id -u)" = 0 ] || { echo "gen-data.sh: run as root (needs ip netns)" >&2; exit 1; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ "${MESH_SKIP_APT:-0}" != 1 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    iproute2 tcpdump nmap hping3 hydra openssh-server openssh-client sshpass \
    vsftpd curl netcat-openbsd iperf3 dnsutils socat iputils-ping python3 procps \
    apache2-utils
fi

NET=10.77.0
SRV=$NET.10
HUB=mesh-hub
# benign clients: c1..c8 mixed users (c5 also runs a fast poller), then one
# host per extra benign kind
BENIGN_HOSTS="c1:$NET.21 c2:$NET.22 c3:$NET.23 c4:$NET.24 c5:$NET.25 c6:$NET.26 c7:$NET.27 c8:$NET.28"
EXTRA_BENIGN="c9:$NET.29 c10:$NET.30 c11:$NET.31 c12:$NET.32 c13:$NET.33"
# attackers: one address per family (a7..a10 share the distributed scan)
ATTACK_HOSTS=""
for i in $(seq 1 21); do ATTACK_HOSTS="$ATTACK_HOSTS a$i:$NET.$((100 + i))"; done
aip() { echo "$NET.$((100 + ${1#a}))"; } # attacker name -> address
# addresses on srv that only answer pings (targets for the ICMP sweep)
DUMMY_FIRST=150
DUMMY_LAST=189
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
for h in $BENIGN_HOSTS $EXTRA_BENIGN $ATTACK_HOSTS; do add_host "${h%%:*}" "${h#*:}"; done
for i in $(seq "$DUMMY_FIRST" "$DUMMY_LAST"); do ip -n mesh-srv addr add "$NET.$i/24" dev eth0; done

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
ns srv socat "TCP-LISTEN:7000,fork,reuseaddr,bind=$SRV" EXEC:cat >/dev/null 2>&1 &
ns srv python3 "$here/pop3_login.py" 110 "$USER_NAME" "$USER_PW" >/dev/null 2>&1 &
ns srv python3 "$here/udp_time.py" 123 >/dev/null 2>&1 &
sleep 2

cd "$work" # hydra writes hydra.restore into the working directory

# password list for the guessing scenario: wrong guesses, the right one late
for i in $(seq 1 400); do echo "guess$i$RANDOM"; done > "$work/words.txt"
{ head -n 60 "$work/words.txt"; } > "$work/words-short.txt"

labels="$out/labels.csv"
[ -f "$labels" ] || echo "round,src_ip,class,family,start,end" > "$labels"
head -n 1 "$labels" | grep -q ',family,' || { echo "gen-data.sh: $labels has no family column (an older generator's?)" >&2; exit 1; }
now() { date +%s.%N; }
label() { echo "$1,$2,$3,$4,$5,$6" >> "$labels"; } # round ip class family start end

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
# NTP-like time queries: small UDP request/response pairs, now and then bursts
ntp_client() { # host deadline seed
  RANDOM=$3
  while running "$2"; do
    for k in $(seq 1 $((RANDOM % 4 + 1))); do ns "$1" python3 "$here/udp_time.py" --query "$SRV" 123; done
    ns "$1" dig +tries=1 +time=1 @"$SRV" "time$RANDOM.lan.example" >/dev/null || true
    sleep "$((RANDOM % 3)).$((RANDOM % 10))"
  done
}
# a long-lived, mostly idle TCP session (echo service) with keepalives,
# reconnecting if it drops
idle_session() { # host deadline
  while running "$2"; do
    ns "$1" timeout $(( $2 - $(date +%s) + 1 )) python3 "$here/keepalive_client.py" "$SRV" 7000 \
      "$((RANDOM % 20 + 10))" "$2" "$work/stop" || sleep 2
  done
}
# interactive SSH: a terminal session typing commands, many small packets
ssh_interactive() { # host deadline seed
  RANDOM=$3
  while running "$2"; do
    { for k in $(seq 1 $((RANDOM % 60 + 30))); do
        echo "echo line $k; ls / | head -n $((k % 5 + 1))"; sleep "0.$((RANDOM % 8 + 1))"
        running "$2" || break
      done; echo exit; } |
      ns "$1" timeout 90 sshpass -p "$USER_PW" ssh -tt -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 "$USER_NAME@$SRV" >/dev/null 2>&1 || true
    sleep "$((RANDOM % 4 + 1))"
  done
}
# a benign crawler: fetches many distinct small pages quickly, then pauses
crawler() { # host deadline seed
  RANDOM=$3
  while running "$2"; do
    local n=$((RANDOM % 25 + 10)) first=$((RANDOM % 10 + 1)) urls=()
    for k in $(seq "$first" $((first + n - 1))); do urls+=("http://$SRV/page$(( (k - 1) % 40 + 1 )).html"); done
    ns "$1" curl -s -m 20 "${urls[@]}" >/dev/null || true # (-o would cover the first URL only)
    sleep "$((RANDOM % 8 + 3))"
  done
}
# a monitoring host pinging a handful of addresses every few seconds
monitor() { # host deadline
  while running "$2"; do
    for t in "$SRV" "$NET.$DUMMY_FIRST" "$NET.$((DUMMY_FIRST + 1))" "$NET.21" "$NET.22" "$NET.23"; do
      ns "$1" ping -c 1 -W 1 "$t" >/dev/null || true
    done
    sleep "$((RANDOM % 4 + 3))"
  done
}

# ---- attacks ---------------------------------------------------------------
# One label line per family and address, with the family's own time span.
# Families run in four lanes at once (scans, slow scan + exfiltration,
# password guessing, floods); each family has attacker addresses of its own.
fam() { # round class family host... -- command...   (runs the command, labels each host)
  local r=$1 class=$2 family=$3; shift 3
  local hosts=()
  while [ "$1" != -- ]; do hosts+=("$1"); shift; done
  shift
  local t0; t0=$(now)
  "$@" || true
  local t1; t1=$(now)
  for h in "${hosts[@]}"; do label "$r" "$(aip "$h")" "$class" "$family" "$t0" "$t1"; done
}
scan_syn() { local base=$(( (RANDOM % 20) * 100 + 1 ))
  ns a1 timeout 60 nmap -sS -T4 -n -Pn --max-retries 1 -p "$base-$((base + 999))" "$SRV" >/dev/null; }
scan_connect() { ns a2 timeout 60 nmap -sT -T4 -n -Pn --max-retries 1 --top-ports $((RANDOM % 400 + 500)) "$SRV" >/dev/null; }
scan_fin() { # FIN, NULL and Xmas scans
  ns a3 timeout 40 nmap -sF -T4 -n -Pn --max-retries 0 -p "1-$((RANDOM % 200 + 200))" "$SRV" >/dev/null
  ns a3 timeout 40 nmap -sN -T4 -n -Pn --max-retries 0 -p "1000-$((RANDOM % 200 + 1200))" "$SRV" >/dev/null
  ns a3 timeout 40 nmap -sX -T4 -n -Pn --max-retries 0 -p "2000-$((RANDOM % 200 + 2200))" "$SRV" >/dev/null
}
scan_udp() { local base=$(( (RANDOM % 10) * 200 + 1 ))
  ns a4 timeout 90 nmap -sU -T4 -n -Pn --max-retries 0 --host-timeout 80s \
    -p "$base-$((base + RANDOM % 200 + 200))" "$SRV" >/dev/null 2>&1; }
scan_icmp() { # ping sweeps of the /24: echo, then timestamp requests
  ns a5 timeout 40 nmap -sn -PE --disable-arp-ping -n -T4 "$NET.1-254" >/dev/null 2>&1
  sleep 2
  ns a5 timeout 40 nmap -sn -PP --disable-arp-ping -n -T4 "$NET.$((RANDOM % 50 + 1))-254" >/dev/null 2>&1
}
scan_slow() { # ~10 ports per 10 s window for about a minute
  local base=$(( (RANDOM % 50) * 100 + 1 ))
  ns a6 timeout 80 nmap -sS -n -Pn --max-retries 0 --scan-delay "$((RANDOM % 400 + 700))ms" \
    -p "$base-$((base + 69))" "$SRV" >/dev/null 2>&1
}
scan_distributed() { # four addresses, each a slice of the ports, at once
  local base=$(( (RANDOM % 10) * 100 + 1 )) k=0 p=()
  for h in a7 a8 a9 a10; do
    local lo=$((base + k * 250)) kind=-sS; k=$((k + 1))
    [ $((k % 2)) = 0 ] && kind=-sT
    ns "$h" timeout 60 nmap "$kind" -n -Pn --max-retries 1 --max-rate $((RANDOM % 30 + 20)) \
      -p "$lo-$((lo + 249))" "$SRV" >/dev/null 2>&1 & p+=($!)
  done
  wait "${p[@]}"
}
flood_syn() {
  ns a11 timeout 30 hping3 -q -S -p 80 -i u400 -c $((RANDOM % 800 + 1200)) "$SRV" >/dev/null 2>&1
  ns a11 timeout 30 hping3 -q -S -p 22 -i u500 -c $((RANDOM % 500 + 600)) "$SRV" >/dev/null 2>&1
}
flood_udp() { # several ports and payload sizes
  for pd in 53:8 123:48 161:30 5060:200; do
    ns a12 timeout 20 hping3 -q --udp -p "${pd%%:*}" -d "${pd#*:}" -i u400 -c $((RANDOM % 300 + 500)) "$SRV" >/dev/null 2>&1
  done
}
flood_icmp() {
  ns a13 timeout 30 hping3 -q -1 -i u400 -d $((RANDOM % 64)) -c $((RANDOM % 1000 + 2000)) "$SRV" >/dev/null 2>&1
}
flood_ack() {
  ns a14 timeout 30 hping3 -q -A -p 80 -i u500 -c $((RANDOM % 500 + 800)) "$SRV" >/dev/null 2>&1
  ns a14 timeout 30 hping3 -q -A -p 443 -i u500 -c $((RANDOM % 300 + 400)) "$SRV" >/dev/null 2>&1
}
flood_http() { # application-layer: many complete small GETs
  ns a15 timeout 40 ab -q -s 5 -n $((RANDOM % 1000 + 1500)) -c $((RANDOM % 12 + 8)) "http://$SRV/page$((RANDOM % 40 + 1)).html" >/dev/null 2>&1
}
# ssh and ftp answer a wrong password slowly (PAM, vsftpd's delay) and hydra
# tries several per connection, so parallel tasks make the connection count:
# 12 and 16 tasks. (Rounds 1-6 of the data behind the committed model used 4
# and 8: 1-8 connections per window, no more than a benign user's 7.)
brute_ssh() { ns a16 timeout 40 hydra -I -q -l "$USER_NAME" -P "$work/words.txt" -t 12 "ssh://$SRV" >/dev/null 2>&1; }
brute_ftp() { ns a17 timeout 40 hydra -I -q -l "$USER_NAME" -P "$work/words.txt" -t 16 "ftp://$SRV" >/dev/null 2>&1; }
brute_http() { ns a18 timeout 30 hydra -I -q -l "$USER_NAME" -P "$work/words.txt" -t 8 -s 8080 "http-get://$SRV/" >/dev/null 2>&1; }
brute_pop3() { ns a19 timeout 40 hydra -I -q -l "$USER_NAME" -P "$work/words.txt" -t 8 "pop3://$SRV" >/dev/null 2>&1; }
exfil_bulk() { # a few large one-way uploads
  for k in $(seq 1 $((RANDOM % 3 + 2))); do
    local port=$([ $((RANDOM % 2)) = 0 ] && echo 9000 || echo 8443)
    head -c $(( (RANDOM % 20 + 15) * 1000000 )) /dev/urandom | ns a20 timeout 30 nc -N "$SRV" "$port" || true
    sleep 0.5
  done
}
exfil_chunked() { # many mid-sized uploads
  for k in $(seq 1 $((RANDOM % 10 + 15))); do
    local port=$([ $((RANDOM % 2)) = 0 ] && echo 9000 || echo 8443)
    head -c $(( (RANDOM % 6 + 2) * 1000000 )) /dev/urandom | ns a21 timeout 30 nc -N "$SRV" "$port" || true
    sleep 0.$((RANDOM % 9))
  done
}
lane() { # round function... (runs families one after another, a pause between)
  local r=$1; shift
  for f in "$@"; do
    case $f in
      scan_syn) fam "$r" portscan scan-syn a1 -- scan_syn ;;
      scan_connect) fam "$r" portscan scan-connect a2 -- scan_connect ;;
      scan_fin) fam "$r" portscan scan-fin a3 -- scan_fin ;;
      scan_udp) fam "$r" portscan scan-udp a4 -- scan_udp ;;
      scan_icmp) fam "$r" portscan scan-icmp a5 -- scan_icmp ;;
      scan_slow) fam "$r" portscan scan-slow a6 -- scan_slow ;;
      scan_distributed) fam "$r" portscan scan-distributed a7 a8 a9 a10 -- scan_distributed ;;
      flood_syn) fam "$r" flood flood-syn a11 -- flood_syn ;;
      flood_udp) fam "$r" flood flood-udp a12 -- flood_udp ;;
      flood_icmp) fam "$r" flood flood-icmp a13 -- flood_icmp ;;
      flood_ack) fam "$r" flood flood-ack a14 -- flood_ack ;;
      flood_http) fam "$r" flood flood-http a15 -- flood_http ;;
      brute_ssh) fam "$r" bruteforce brute-ssh a16 -- brute_ssh ;;
      brute_ftp) fam "$r" bruteforce brute-ftp a17 -- brute_ftp ;;
      brute_http) fam "$r" bruteforce brute-http a18 -- brute_http ;;
      brute_pop3) fam "$r" bruteforce brute-pop3 a19 -- brute_pop3 ;;
      exfil_bulk) fam "$r" exfiltration exfil-bulk a20 -- exfil_bulk ;;
      exfil_chunked) fam "$r" exfiltration exfil-chunked a21 -- exfil_chunked ;;
      sleep*) sleep "${f#sleep}" ;;
    esac
    sleep 3
  done
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
  ntp_client c9 "$deadline" $((seed + 11)) & pids+=($!)
  idle_session c10 "$deadline" & pids+=($!)
  ssh_interactive c11 "$deadline" $((seed + 12)) & pids+=($!)
  crawler c12 "$deadline" $((seed + 13)) & pids+=($!)
  monitor c13 "$deadline" & pids+=($!)
  # attacks in four lanes; the order within each lane changes per round
  sleep 8
  lanes=()
  if [ $((r % 2)) = 1 ]; then
    lane "$r" scan_syn scan_connect scan_fin scan_udp scan_icmp scan_distributed & lanes+=($!)
    lane "$r" scan_slow exfil_bulk exfil_chunked & lanes+=($!)
    lane "$r" brute_ssh brute_ftp brute_http brute_pop3 & lanes+=($!)
    lane "$r" sleep40 flood_syn flood_udp flood_icmp flood_ack flood_http & lanes+=($!)
  else
    lane "$r" scan_distributed scan_icmp scan_udp scan_fin scan_connect scan_syn & lanes+=($!)
    lane "$r" exfil_chunked exfil_bulk scan_slow & lanes+=($!)
    lane "$r" brute_pop3 brute_http brute_ftp brute_ssh & lanes+=($!)
    lane "$r" sleep20 flood_http flood_ack flood_icmp flood_udp flood_syn & lanes+=($!)
  fi
  wait "${lanes[@]}" || true
  # benign traffic goes on for at least ROUND_SECONDS in all
  while [ "$(date +%s)" -lt $((start + round_secs)) ]; do sleep 1; done
  touch "$work/stop"
  wait "${pids[@]}" || true
  end=$(date +%s)
  for h in $BENIGN_HOSTS; do label "$r" "${h#*:}" benign benign-mixed "$start" "$end"; done
  label "$r" "$NET.29" benign benign-ntp "$start" "$end"
  label "$r" "$NET.30" benign benign-keepalive "$start" "$end"
  label "$r" "$NET.31" benign benign-ssh-interactive "$start" "$end"
  label "$r" "$NET.32" benign benign-crawler "$start" "$end"
  label "$r" "$NET.33" benign benign-monitor "$start" "$end"
  sleep 2
  kill -INT "$dump"; wait "$dump" || true
  echo "round $r: $((end - start)) s, $(stat -c %s "$pcap") bytes -> $pcap" >&2
done
echo "labels: $labels" >&2
