//! What /proc says of a process: CPU, context switches, threads, memory.

use anyhow::Context;

/// USER_HZ: the unit of /proc/<pid>/stat's times, 100 on every Linux architecture we run on.
const TICKS_PER_S: f64 = 100.0;

#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User + system CPU of the process and its reaped children.
    pub cpu_s: f64,
    /// Voluntary + involuntary switches of the threads alive now (a thread that ended
    /// took its count with it).
    pub ctx_switches: u64,
    pub threads: usize,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Usage {
    /// The process and every process below it (Postfix's master and its daemons; for
    /// postern, the one process), as relay-bench's `tree_cpu` sums them.
    pub fn of(pid: u32) -> anyhow::Result<Usage> {
        let mut total = Usage::at(&format!("/proc/{pid}"))?;
        for child in descendants(pid) {
            // A process may end between the listing and the reading: its CPU is then in
            // its parent's cutime/cstime.
            if let Ok(u) = Usage::at(&format!("/proc/{child}")) {
                total.cpu_s += u.cpu_s;
                total.ctx_switches += u.ctx_switches;
                total.threads += u.threads;
                total.rss_kib += u.rss_kib;
                total.hwm_kib += u.hwm_kib;
            }
        }
        Ok(total)
    }

    pub fn of_self() -> anyhow::Result<Usage> {
        Usage::at("/proc/self")
    }

    fn at(dir: &str) -> anyhow::Result<Usage> {
        let stat =
            std::fs::read_to_string(format!("{dir}/stat")).with_context(|| dir.to_string())?;
        // The command name may hold spaces: the fields start after its closing parenthesis.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime, stime, cutime, cstime: fields 14-17, i.e. 11-14 after the name and state.
        let ticks: u64 = fields
            .get(11..15)
            .context("short /proc stat")?
            .iter()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .sum();
        let status = std::fs::read_to_string(format!("{dir}/status"))?;
        let mut ctx_switches = 0;
        let mut threads = 0;
        for task in std::fs::read_dir(format!("{dir}/task"))?.flatten() {
            threads += 1;
            if let Ok(s) = std::fs::read_to_string(task.path().join("status")) {
                ctx_switches += field(&s, "voluntary_ctxt_switches:")
                    + field(&s, "nonvoluntary_ctxt_switches:");
            }
        }
        Ok(Usage {
            cpu_s: ticks as f64 / TICKS_PER_S,
            ctx_switches,
            threads,
            rss_kib: field(&status, "VmRSS:"),
            hwm_kib: field(&status, "VmHWM:"),
        })
    }
}

/// Every live process whose parent chain leads to `root`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.insert(pid, ppid);
        }
    }
    let mut out = Vec::new();
    for &pid in parent.keys() {
        let mut at = pid;
        while let Some(&up) = parent.get(&at) {
            if up == root {
                out.push(pid);
                break;
            }
            if up <= 1 {
                break;
            }
            at = up;
        }
    }
    out
}

fn field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Raise the open-file limit to at least `need` (within the hard limit).
pub fn raise_fd_limit(need: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            anyhow::bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur < need {
            lim.rlim_cur = need.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                anyhow::bail!("setrlimit: {}", std::io::Error::last_os_error());
            }
        }
    }
    anyhow::ensure!(
        lim.rlim_cur >= need,
        "open file limit {} is below the {need} needed (ulimit -n)",
        lim.rlim_cur
    );
    Ok(())
}
