//! A LAN of network namespaces, for the sensor's tests, `ben bench block`
//! and demos on live traffic: a bridge in its own namespace; a victim
//! (10.214.K.1) running a web server on 8080; a scanner (.2), a flooder
//! (.3) and a benign client (.4), each host's interface `e<who>`. Built
//! with `ip` and `python3`; needs root. Removed when dropped. Every loop
//! in it is bounded; only namespace-local addresses are used.

use std::process::{Command, Output};
use std::sync::atomic::Ordering;

fn sh(args: &[&str]) -> Result<Output, String> {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("running {}: {e}", args.join(" ")))
}

/// Runs a command; its stdout, or what it said on failure.
pub fn must(args: &[&str]) -> Result<String, String> {
    let out = sh(args)?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the network namespace `name` if there is one; the error says
/// why one stays.
pub fn remove_netns(name: &str) -> Result<(), String> {
    if !std::path::Path::new("/run/netns").join(name).exists() {
        return Ok(());
    }
    must(&["ip", "netns", "del", name]).map(|_| ())
}

/// Network namespaces removed when this is dropped (one that stays is a
/// warning).
pub struct Namespaces(pub Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            if let Err(e) = remove_netns(ns) {
                tracing::warn!(netns = %ns, error = %e, "a network namespace stays behind");
            }
        }
    }
}

/// Runs a Python program in namespace `ns`; its stdout.
pub fn py(ns: &str, program: &str) -> Result<String, String> {
    must(&["ip", "netns", "exec", ns, "python3", "-c", program])
}

/// The LAN; namespaces removed when dropped.
pub struct Lan {
    k: u32,
    server: std::process::Child,
    // Dropped after the server is stopped (fields drop after `drop`).
    _names: Namespaces,
}

impl Lan {
    pub fn ns(&self, who: &str) -> String {
        format!("s{who}{}", self.k)
    }

    pub fn ip(&self, host: u8) -> String {
        format!("10.214.{}.{host}", self.k)
    }

    /// A new LAN, numbered from this process's id (two at once in one
    /// process get different numbers).
    pub fn new() -> Result<Lan, String> {
        if !sh(&["id", "-u"])?.stdout.starts_with(b"0") {
            return Err("network namespaces need root".into());
        }
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = std::process::id() % 100 * 2 + 20 + N.fetch_add(1, Ordering::Relaxed) % 2;
        let hosts = [("victim", 1u8), ("scan", 2), ("flood", 3), ("user", 4)];
        let lan = format!("slan{k}");
        let mut names = vec![lan.clone()];
        names.extend(hosts.iter().map(|(w, _)| format!("s{w}{k}")));
        // Removed again if anything below fails.
        let names = Namespaces(names);
        for ns in &names.0 {
            remove_netns(ns)?;
            must(&["ip", "netns", "add", ns])?;
            must(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        must(&["ip", "-n", &lan, "link", "add", "br0", "type", "bridge"])?;
        must(&["ip", "-n", &lan, "link", "set", "br0", "up"])?;
        for (who, host) in hosts {
            let ns = format!("s{who}{k}");
            let (inner, outer) = (format!("e{who}"), format!("p{who}"));
            must(&[
                "ip", "link", "add", &inner, "netns", &ns, "type", "veth", "peer", "name", &outer,
                "netns", &lan,
            ])?;
            must(&[
                "ip", "-n", &lan, "link", "set", &outer, "master", "br0", "up",
            ])?;
            must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.214.{k}.{host}/24"),
                "dev",
                &inner,
            ])?;
            // Jumbo frames fit the LAN.
            must(&["ip", "-n", &lan, "link", "set", &outer, "mtu", "9000"])?;
            must(&["ip", "-n", &ns, "link", "set", &inner, "mtu", "9000", "up"])?;
        }
        must(&["ip", "-n", &lan, "link", "set", "br0", "mtu", "9000"])?;
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("svictim{k}"),
                "python3",
                "-c",
                "import http.server, socketserver\n\
                 class H(http.server.BaseHTTPRequestHandler):\n \
                   def do_GET(self):\n  \
                     body=b'<html>'+b'x'*1500+b'</html>'\n  \
                     self.send_response(200); self.send_header('Content-Length',str(len(body))); self.end_headers(); self.wfile.write(body)\n \
                   def log_message(self,*a): pass\n\
                 socketserver.ThreadingTCPServer.allow_reuse_address=True\n\
                 socketserver.ThreadingTCPServer(('0.0.0.0',8080),H).serve_forever()\n",
            ])
            .spawn()
            .map_err(|e| format!("python3 for the victim's web server: {e}"))?;
        let lan = Lan {
            k,
            server,
            _names: names,
        };
        // The server listens and every host reaches the victim.
        for who in ["scan", "flood", "user"] {
            py(
                &lan.ns(who),
                &format!(
                    "import socket,time\n\
                     for i in range(100):\n \
                       try:\n  socket.create_connection(('{}',8080),timeout=1).close(); break\n \
                       except OSError: time.sleep(0.05)\n\
                     else: raise SystemExit('the victim is unreachable')\n",
                    lan.ip(1)
                ),
            )?;
        }
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        if let Err(e) = self.server.kill().and_then(|()| self.server.wait()) {
            tracing::warn!(error = %e, "the lab's web server did not stop");
        }
    }
}

impl Lan {
    /// The benign client: 30 pages fetched one after another, 0.1 s apart,
    /// on a thread of its own (a page that does not load ends it with an
    /// error).
    pub fn browse(&self) -> std::thread::JoinHandle<Result<String, String>> {
        let (ns, victim) = (self.ns("user"), self.ip(1));
        std::thread::spawn(move || {
            py(
                &ns,
                &format!(
                    "import urllib.request,time\n\
                     for i in range(30):\n \
                       urllib.request.urlopen('http://{victim}:8080/page%d' % i, timeout=5).read()\n \
                       time.sleep(0.1)\n"
                ),
            )
        })
    }

    /// A TCP connect scan of the victim's ports 1 to 300 from the
    /// scanner's address `.from`: `nmap -sT` when nmap is installed
    /// (scripts/test installs it), else the same connects from Python.
    /// Returns which of the two ran.
    pub fn scan(&self, from: u8) -> Result<&'static str, String> {
        let has_nmap = Command::new("nmap")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if has_nmap {
            must(&[
                "ip",
                "netns",
                "exec",
                &self.ns("scan"),
                "nmap",
                "-n",
                "-Pn",
                "-sT",
                "-p",
                "1-300",
                "-S",
                &self.ip(from),
                "-e",
                "escan",
                &self.ip(1),
            ])?;
            return Ok("nmap -sT");
        }
        py(
            &self.ns("scan"),
            &format!(
                "import socket\n\
                 for p in range(1,301):\n \
                   s=socket.socket(); s.settimeout(0.5); s.bind(('{}',0))\n \
                   s.connect_ex(('{}',p)); s.close()\n",
                self.ip(from),
                self.ip(1)
            ),
        )
        .map(|_| "a Python connect scan")
    }

    /// Gives the scanner another address, `.host` (each run of a bench
    /// scans from a new one: the last is blocked).
    pub fn add_scanner_address(&self, host: u8) -> Result<(), String> {
        must(&[
            "ip",
            "-n",
            &self.ns("scan"),
            "addr",
            "add",
            &format!("{}/24", self.ip(host)),
            "dev",
            "escan",
        ])
        .map(|_| ())
    }

    /// Whether the scanner, from `.from`, opens a connection to the
    /// victim's web server within a second.
    pub fn scanner_connects(&self, from: u8) -> Result<bool, String> {
        let out = py(
            &self.ns("scan"),
            &format!(
                "import socket\n\
                 s=socket.socket(); s.settimeout(1.0); s.bind(('{}',0))\n\
                 print('open' if s.connect_ex(('{}',8080))==0 else 'shut')\n",
                self.ip(from),
                self.ip(1)
            ),
        )?;
        Ok(out.trim() == "open")
    }

    /// A UDP flood from the flooder: `n` datagrams of 16 bytes to the
    /// victim's port 9999, each from a fresh socket (source port).
    pub fn flood(&self, n: usize) -> Result<(), String> {
        py(
            &self.ns("flood"),
            &format!(
                "import socket\n\
                 for i in range({n}):\n \
                   s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n \
                   s.sendto(b'x'*16,('{}',9999)); s.close()\n",
                self.ip(1)
            ),
        )
        .map(|_| ())
    }
}
