//! What the benchmarks share: the CPU time this process and the services
//! on this host spent, and whether a service answers.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each benchmark includes this module and uses what it needs"
)]

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpStream, ToSocketAddrs as _},
    time::Duration,
};

/// CPU time this process has used so far, user and system, all threads:
/// from `/proc/self/stat` (Linux), in clock ticks taken as 10ms (`USER_HZ`
/// is 100 on x86 and ARM Linux). `None` where there is no such file.
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name, in parentheses, may hold spaces: the fields that
    // follow it are counted from its closing parenthesis. utime and stime
    // are fields 14 and 15 of the line, so the 12th and 13th after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

/// The time on CPU so far of each thread of the processes on this host
/// named `postgres` or `nats-server` (the services, when they run here; any
/// other such process counts too), in nanoseconds by thread id, from
/// `/proc/<pid>/task/<tid>/schedstat` (the ticks of `/proc/<pid>/stat` lag
/// for another process over a fraction of a second). `None` where there is
/// no such file.
pub fn services_cpu_time() -> Option<HashMap<String, u64>> {
    let mut threads = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if !matches!(comm.trim_end(), "postgres" | "nats-server") {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(entry.path().join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let on_cpu = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
            if let Some(on_cpu) = on_cpu {
                threads.insert(task.file_name().to_string_lossy().into_owned(), on_cpu);
            }
        }
    }
    Some(threads)
}

/// The services' CPU time spent since `start`, per message, in
/// microseconds: each thread's time since then (all of it for a thread
/// started since). A thread that ended meanwhile (a database connection
/// closed) takes its time with it, and is not counted.
pub fn services_cpu_per_message(
    start: Option<HashMap<String, u64>>,
    messages: usize,
) -> Option<f64> {
    let (start, now) = (start?, services_cpu_time()?);
    let spent: u64 = now
        .iter()
        .map(|(thread, on_cpu)| on_cpu.saturating_sub(start.get(thread).copied().unwrap_or(0)))
        .sum();
    Some(spent as f64 / 1e3 / messages as f64)
}

/// Whether something listens at the host and port of `url`.
pub fn reachable(url: &str, default_port: u16) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = host.split(['/', '?']).next().unwrap_or(host);
    let addr = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    };
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default();
    addrs
        .iter()
        .any(|addr| TcpStream::connect_timeout(addr, Duration::from_secs(2)).is_ok())
}
