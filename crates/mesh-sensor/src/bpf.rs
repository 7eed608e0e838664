//! Capture filters: classic BPF programs in `tcpdump -ddd` form (a count,
//! then one `code jt jf k` line per instruction, decimal).

use crate::ring::BpfInsn;

/// The kernel's limit on a classic BPF program.
pub const MAX_INSNS: usize = 4096;

/// Parses `tcpdump -ddd` output. Pure.
pub fn parse(text: &str) -> Result<Vec<BpfInsn>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let n: usize = lines
        .next()
        .ok_or("an empty BPF program (expected tcpdump -ddd output: a count, then instructions)")?
        .parse()
        .map_err(|_| "the first line of a BPF program must be its instruction count")?;
    if n == 0 || n > MAX_INSNS {
        return Err(format!(
            "a BPF program of {n} instructions (the kernel takes 1 to {MAX_INSNS})"
        ));
    }
    let mut out = Vec::with_capacity(n);
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || {
            format!(
                "BPF instruction {} ({line:?}): expected `code jt jf k` in decimal",
                i + 1
            )
        };
        if f.len() != 4 {
            return Err(bad());
        }
        out.push(BpfInsn {
            code: f[0].parse().map_err(|_| bad())?,
            jt: f[1].parse().map_err(|_| bad())?,
            jf: f[2].parse().map_err(|_| bad())?,
            k: f[3].parse().map_err(|_| bad())?,
        });
    }
    if out.len() != n {
        return Err(format!(
            "the BPF program announces {n} instructions and has {}",
            out.len()
        ));
    }
    Ok(out)
}

/// Compiles a pcap filter expression for Ethernet with `tcpdump -ddd`.
pub fn compile(expr: &str) -> Result<Vec<BpfInsn>, String> {
    let out = std::process::Command::new("tcpdump")
        // `--`: an expression starting with `-` is an expression, never
        // one of tcpdump's options (`-r FILE`, `-w FILE`, …).
        .args(["-ddd", "-y", "EN10MB", "--", expr])
        .output()
        .map_err(|e| {
            format!("running tcpdump to compile the filter {expr:?}: {e} (install the tcpdump package, or run without --filter)")
        })?;
    if !out.status.success() {
        return Err(format!(
            "the filter {expr:?} does not compile: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpdump_output_parses() {
        let p = parse("4\n40 0 0 12\n21 0 1 2048\n6 0 0 262144\n6 0 0 0\n").unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[1],
            BpfInsn {
                code: 21,
                jt: 0,
                jf: 1,
                k: 2048
            }
        );
    }

    #[test]
    fn a_filter_is_never_taken_for_an_option() {
        assert!(
            std::process::Command::new("tcpdump")
                .arg("--version")
                .output()
                .is_ok(),
            "tcpdump is missing: install it (scripts/test does)"
        );
        let e = compile("-r /etc/passwd").unwrap_err();
        assert!(e.contains("does not compile"), "{e}");
        assert!(compile("udp").is_ok_and(|p| p.len() > 2));
    }

    #[test]
    fn bad_programs_say_what_is_wrong() {
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("x\n").unwrap_err().contains("count"));
        assert!(parse("0\n").unwrap_err().contains("1 to"));
        assert!(parse("2\n40 0 0 12\n").unwrap_err().contains("announces 2"));
        assert!(parse("1\n40 0 12\n").unwrap_err().contains("instruction 1"));
        assert!(parse("1\n40 0 0 -1\n").unwrap_err().contains("decimal"));
        assert!(parse("1\n40 300 0 1\n").is_err());
    }
}
